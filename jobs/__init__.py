"""Thin entry points, one per job: parse args, load config, build the session, call
`pipelines`, start the query. Each `main(argv)` serves `tailor <command>`, `spark-submit
jobs/<job>.py` and a Databricks python_wheel_task alike."""
