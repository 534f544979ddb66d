"""``taskell dashboard``: a small web page of workers, running tasks, queues and dead letters.

Needs the extra ``taskell[dashboard]`` (Starlette, uvicorn); nothing else imports this package.
"""
