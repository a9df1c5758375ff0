"""Defining pipelines: stages and DAG (model), parameters, value codecs, retries, rates,
resources, effects, finding pipelines in dags modules."""
