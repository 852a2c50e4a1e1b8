"""The paper, and nothing else: nearest-neighbour selection, N3 blocks, networks."""

from .knn import concrete_knn, continuous_knn, hard_knn, select
from .n3 import N3Aggregation2d, N3Block2d, N3Set, neighbour_volumes
from .nets import N3Net, NetConfig, build, dncnn, knn_net, n3net, n3net_light, n3net_sr, vdsr

__all__ = ["N3Aggregation2d", "N3Block2d", "N3Net", "N3Set", "NetConfig", "build", "concrete_knn",
           "continuous_knn", "dncnn", "hard_knn", "knn_net", "n3net", "n3net_light", "n3net_sr",
           "neighbour_volumes", "select", "vdsr"]
