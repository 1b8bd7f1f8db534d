# MLflow's image with the Postgres driver, boto3 for S3 artifacts and Flask-WTF for its basic-auth app.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir psycopg2-binary==2.9.10 boto3==1.44.5 flask-wtf==1.3.0
