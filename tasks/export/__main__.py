"""`python -m tasks.export`: the export stage with the params.yaml of the current folder (as dvc.yaml runs it)."""

if __name__ == "__main__":  # not when a spawned worker process re-imports this module
    from tasks.export import stage

    stage.main()
