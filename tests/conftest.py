import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LIFECYCLE_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub (MLflow would fetch model cards)
