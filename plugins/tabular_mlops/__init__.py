"""Domain package of the tabular MLOps bundle: configs, data, features, models, monitoring.

Airflow task bodies, the `mlops` CLI and the tests all import from here; the DAG files only wire.
"""

__version__ = "0.1.0"
