"""One distribution, `tailor`, with the `tailor` console script.

    pip install -c requirements.lock -e .[dev]     # everything, for development and CI
    pip install -c requirements.lock .              # the API and producers: no Spark

Direct dependencies are pinned here; requirements.lock pins the whole tree.
"""

from setuptools import find_packages, setup

SPARK = [
    "pyspark==4.1.1",          # matches the JVM artifacts in conf/jvm/spark/pom.xml
    "delta-spark==4.4.0",      # io.delta:delta-spark_4.1_2.13:4.4.0
    "pandas==2.3.3",           # pyspark 4.1 does not fully support pandas 3
    "pyarrow==25.0.1",
    "numpy==2.4.6",            # candidates.top_items: ALS scoring as matrix products (OpenBLAS)
    "great-expectations[spark]==1.24.1",
    "mlflow==3.17.2",
    "matplotlib==3.11.2",      # tailor dashboard's plots
]

setup(
    name="tailor",
    version="0.1.0",
    description="Real-time personalization engine for email marketing on Spark and Delta Lake",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["jobs", "jobs.*", "pipelines", "pipelines.*", "expectations",
                                    "expectations.*", "api", "api.*"]) + ["pipelines.conf"],
    # conf/ (base and environment YAML, segment rules, the JVM poms and log4j2 files) ships
    # inside the package, so a wheel installed on a cluster has its configuration.
    package_dir={"pipelines.conf": "conf"},
    package_data={"pipelines.conf": ["*.yaml", "*.properties", "jvm/*/*.xml", "jvm/*/*.properties",
                                     "templates/*", "monitoring/*"]},
    include_package_data=False,
    install_requires=[
        "pyyaml==6.0.3",
        "pydantic==2.14.4",
        "jsonschema==4.26.0",
        "rfc3339-validator==0.1.4",
        "kafka-python==3.0.12",
        "boto3==1.44.8",
        "cryptography==50.0.2",
        "flask==3.1.3",
        "flask-limiter==4.1.1",
        "redis==8.1.0",
        "hiredis==3.5.0",          # the Redis store packs its commands with it, in C
        "gunicorn==26.2.0",
        "prometheus-client==0.26.0",
        "itsdangerous==2.2.0",
        "cachetools==7.3.3",       # the API's in-process TTL cache of content rows
    ],
    extras_require={
        "spark": SPARK,
        "dev": SPARK + [
            "pytest==9.2.0",
            "pytest-timeout==2.4.0",
            "pytest-xdist==3.8.0",
            "chispa==0.12.0",
            "moto[server]==5.2.5",
            "hypothesis==6.170.15",
            "schemathesis==4.32.5",    # tests/api: the API against its own /openapi.json
            "selenium==4.51.0",        # tests/api: the preference page in Debian's headless chromium
            "nbclient==0.11.0",        # tests: every notebook runs top to bottom
            "nbformat==5.11.1",
            "ipykernel==7.4.0",
            "ruff==0.17.5",
            "mypy==2.4.1",
            "types-PyYAML==6.0.12.20261113",
            "types-jsonschema==4.26.0.20261006",
        ],
    },
    entry_points={"console_scripts": ["tailor=jobs.cli:main", "tailor-task=jobs.cli:task_main"]},
)
