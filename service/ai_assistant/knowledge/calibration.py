"""Query-specific score calibration.

E5 cosines are compressed (unrelated text still scores ~0.7-0.85) and shift with the query's language: Chinese queries
score about 0.05 higher against everything than English ones. A fixed cosine threshold therefore either drops relevant
English answers or lets unrelated Chinese questions through. Subtracting the query's mean similarity to a fixed set of
everyday sentences (both languages, no company topics) removes that offset: on the sample corpus relevant questions
land at >= 0.100 and unrelated ones at <= 0.077 (docs/knowledge.md, "Calibration"), so one `min_score` works for both.
"""

from __future__ import annotations

import threading
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

_cache: dict[str, Vector] = {}
_lock = threading.Lock()


def background_offset(embedder: Embedder, query_vector: Vector) -> float:
    """The query's mean cosine to the background sentences; their vectors depend only on the model, so they are
    embedded once per process and model."""
    with _lock:
        vectors = _cache.get(embedder.model_id)
        if vectors is None:
            vectors = _cache[embedder.model_id] = embedder.embed_passages(list(BACKGROUND))
    return float(np.mean(vectors @ query_vector))
