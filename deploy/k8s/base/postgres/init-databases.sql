-- One database per service; the image creates POSTGRES_DB (registry) itself. Run once, by the
-- postgres image's entrypoint, on an empty data directory, as POSTGRES_USER (the owner).
CREATE DATABASE trainer;
CREATE DATABASE estimator;
