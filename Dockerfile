# One image for every Observatory process (web, collector, worker, beat); the command differs.
# It carries the runtime set only (requirements.lock): no test tools, simulator or embedded
# services (those are in requirements-dev.lock, for run.py test/demo/bench).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PRODUCTION=true
WORKDIR /app
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
# Bytecode for the application's modules, made once here: PYTHONDONTWRITEBYTECODE (and a
# read-only /app) would otherwise have every new gunicorn or Celery process compile them all
# from source again, a second or more of each worker's start (pip compiled site-packages).
RUN python -m compileall -q apps collectors observatory
# Settings refuse a weak SECRET_KEY in production, so the build uses a throwaway random one;
# collectstatic reads no database.
RUN SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    DATABASE_URL=postgres://build@localhost/build python manage.py collectstatic --noinput
# No process writes to /app (beat's schedule file goes to /tmp, docker-compose.yml).
RUN useradd --system --no-create-home observatory
USER observatory
EXPOSE 8000 4318
CMD ["gunicorn", "observatory.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "4"]
