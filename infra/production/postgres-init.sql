-- MLflow uses the database the image creates (POSTGRES_DB); Prefect and the episode index get their own.
CREATE DATABASE prefect;
CREATE DATABASE episodes;
