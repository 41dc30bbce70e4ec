"""`python -m tasks.embed`: the embed stage with the params.yaml of the current folder (as dvc.yaml runs it)."""

if __name__ == "__main__":  # not when a spawned worker process re-imports this module
    from tasks import native_noise

    native_noise.filter_stderr()  # TensorFlow's C++ start-up lines, however DVC runs this (`dvc exp run` too)
    from tasks.embed import stage

    stage.main()
