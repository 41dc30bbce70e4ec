"""`python -m tasks.health`: the health stage with the params.yaml of the current folder (as dvc.yaml runs it)."""

if __name__ == "__main__":
    from tasks.health import stage

    stage.main()
