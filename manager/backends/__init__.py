"""Scaler backends: how the manager starts and stops consumers, behind the `ScalerBackend` seam.

    base                        the seam (`ScalerBackend`, `OomKill`); pure
    local, local_memory,        consumers as child processes (`python -m consumer`), each in its own
    local_cgroup, local_spill   memory cgroup where the machine allows it; the spill slots they may take
    kubernetes, kube_cache,     one consumer Deployment per group; an informer cache;
    kube_objects                the Deployment as a pure function of the group and the settings

I/O rule: `kubernetes`, `kube_cache` (and `manager.leader`) are the only modules importing
`kubernetes_asyncio`; `local*` spawn processes and write cgroup files and spill ledgers. No Redis here.
"""

from manager.backends.base import ScalerBackend

__all__ = ["ScalerBackend"]
