"""Airflow / Cloud Composer DAG: a daily dicom-transfer export then copy, from Flex Templates.

Each run exports the previous day's studies (a filter file written by an upstream system into
a dated folder) and copies the day's incoming folder. Re-runs are safe: unchanged instances are
counted ``unchanged`` and never rewritten, so a retried or back-filled day does no harm.
"""

from __future__ import annotations

import datetime

from airflow import DAG
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

PROJECT = "PROJECT"
REGION = "us-central1"
TEMPLATES = "gs://BUCKET/templates"
ENVIRONMENT = {"tempLocation": "gs://BUCKET/tmp", "machineType": "n2-standard-4", "maxWorkers": 20}

with DAG(
    dag_id="dicom_transfer_daily",
    start_date=datetime.datetime(2026, 1, 1),
    schedule="0 2 * * *",
    catchup=False,
) as dag:
    export = DataflowStartFlexTemplateOperator(
        task_id="export_yesterdays_studies",
        project_id=PROJECT,
        location=REGION,
        body={
            "launchParameter": {
                "jobName": "dicom-transfer-export-{{ ds_nodash }}",
                "containerSpecGcsPath": f"{TEMPLATES}/export.json",
                "parameters": {
                    "dicomweb_url": "https://healthcare.googleapis.com/v1/projects/PROJECT/locations/"
                                    "us-central1/datasets/DATASET/dicomStores/STORE/dicomWeb",
                    "filter_file": "gs://BUCKET/filters/{{ ds }}.txt",
                    "output": "gs://ARCHIVE_BUCKET/export",
                    "layout": "azure",
                    "operation_id": "export-{{ ds_nodash }}",
                },
                "environment": ENVIRONMENT,
            }
        },
    )
    copy = DataflowStartFlexTemplateOperator(
        task_id="copy_todays_incoming",
        project_id=PROJECT,
        location=REGION,
        body={
            "launchParameter": {
                "jobName": "dicom-transfer-copy-{{ ds_nodash }}",
                "containerSpecGcsPath": f"{TEMPLATES}/copy.json",
                "parameters": {
                    "input": "gs://INCOMING_BUCKET/{{ ds }}/**.dcm",
                    "output": "gs://ARCHIVE_BUCKET/by-uid",
                    "operation_id": "copy-{{ ds_nodash }}",
                    "errors": "gs://ARCHIVE_BUCKET/reports/copy-{{ ds_nodash }}/errors.log",
                    "summary": "gs://ARCHIVE_BUCKET/reports/copy-{{ ds_nodash }}/summary.json",
                },
                "environment": ENVIRONMENT,
            }
        },
    )
    export >> copy
