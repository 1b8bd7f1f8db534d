-- MLflow uses the database the image creates (POSTGRES_DB); Prefect gets its own.
CREATE DATABASE prefect;
