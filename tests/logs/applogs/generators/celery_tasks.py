from celery import Celery
app = Celery("tasks", broker="filesystem://", backend=None)
app.conf.broker_transport_options = {"data_folder_in": "/tmp/drill/cel/q", "data_folder_out": "/tmp/drill/cel/q"}
app.conf.worker_hijack_root_logger = True

@app.task(bind=True, max_retries=1)
def charge(self, uid):
    if uid % 3 == 0:
        raise self.retry(exc=ConnectionError(f"gateway 10.0.0.{uid} unreachable"), countdown=0)
    return {}[f"user-{uid}"]
