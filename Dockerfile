# One image for every Observatory process (web, collector, worker, beat); the command differs.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PRODUCTION=true
WORKDIR /app
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
RUN SECRET_KEY=build DATABASE_URL=postgres://build@localhost/build python manage.py collectstatic --noinput
EXPOSE 8000 4318
CMD ["gunicorn", "observatory.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "4"]
