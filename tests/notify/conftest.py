from notify_support import make_env, scripted_tasks  # noqa: F401 - fixtures
