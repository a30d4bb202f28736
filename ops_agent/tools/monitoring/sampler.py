"""System metrics from psutil: one `sample()` reads everything, off the event loop (its caller runs it in a
thread). Rates (disk and network I/O) and CPU figures cover the time since the previous sample, so a
reading never sleeps."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psutil
from pydantic import BaseModel, Field

__all__ = ["DiskUsage", "ProcessUsage", "SystemMetrics", "SystemSampler"]

# Pseudo and container filesystems say nothing about disk space a person acts on.
_SKIP_FILESYSTEMS = {"proc", "sysfs", "tmpfs", "devtmpfs", "devpts", "overlay", "squashfs", "cgroup", "cgroup2", "nsfs"}


class DiskUsage(BaseModel):
    mount: str
    total_bytes: int
    used_bytes: int
    percent: float


class ProcessUsage(BaseModel):
    pid: int
    name: str
    cpu_percent: float
    memory_percent: float


class SystemMetrics(BaseModel):
    sampled_at: datetime
    cpu_percent: float = Field(description="CPU busy % across all cores over cpu_window_s.")
    cpu_per_core: list[float] = Field(default_factory=list, description="Busy % per core over cpu_window_s.")
    cpu_window_s: float = Field(description="Seconds the CPU and rate figures cover.")
    cpu_count: int
    load_average: tuple[float, float, float] = Field(description="1, 5 and 15 minute load averages.")
    memory_total_bytes: int
    memory_used_bytes: int
    memory_percent: float
    swap_percent: float
    disks: list[DiskUsage]
    disk_read_bytes_per_s: float | None = Field(None, description="None on the first sample.")
    disk_write_bytes_per_s: float | None = None
    net_sent_bytes_per_s: float | None = None
    net_recv_bytes_per_s: float | None = None
    process_count: int
    top_cpu: list[ProcessUsage] = Field(default_factory=list, description="Processes using the most CPU.")
    top_memory: list[ProcessUsage] = Field(default_factory=list, description="Processes using the most memory.")
    uptime_s: float


class SystemSampler:
    def __init__(self, *, top_n: int = 5) -> None:
        self.top_n = top_n
        psutil.cpu_percent(interval=None)
        psutil.cpu_percent(interval=None, percpu=True)
        self._at = time.monotonic()
        self._io = (psutil.disk_io_counters(), psutil.net_io_counters())
        self._processes: dict[int, psutil.Process] = {}
        self._first = True

    def sample(self) -> SystemMetrics:
        now = time.monotonic()
        window = now - self._at
        if self._first:  # no window yet: the average since boot is the honest figure
            cpu, per_core = _since_boot(), []
            window = time.time() - psutil.boot_time()
        else:
            cpu, per_core = psutil.cpu_percent(interval=None), psutil.cpu_percent(interval=None, percpu=True)
        disk_io, net_io = psutil.disk_io_counters(), psutil.net_io_counters()
        rates = _rates(self._io, (disk_io, net_io), now - self._at) if not self._first else (None,) * 4
        self._at, self._io, self._first = now, (disk_io, net_io), False
        memory = psutil.virtual_memory()
        processes = self._process_usage()
        return SystemMetrics(
            sampled_at=datetime.now(UTC),
            cpu_percent=cpu,
            cpu_per_core=per_core,
            cpu_window_s=round(window, 3),
            cpu_count=psutil.cpu_count() or 1,
            load_average=psutil.getloadavg(),
            memory_total_bytes=memory.total,
            memory_used_bytes=memory.total - memory.available,
            memory_percent=memory.percent,
            swap_percent=psutil.swap_memory().percent,
            disks=_disks(),
            disk_read_bytes_per_s=rates[0],
            disk_write_bytes_per_s=rates[1],
            net_sent_bytes_per_s=rates[2],
            net_recv_bytes_per_s=rates[3],
            process_count=len(processes),
            top_cpu=sorted(processes, key=lambda p: p.cpu_percent, reverse=True)[: self.top_n],
            top_memory=sorted(processes, key=lambda p: p.memory_percent, reverse=True)[: self.top_n],
            uptime_s=round(time.time() - psutil.boot_time(), 1),
        )

    def _process_usage(self) -> list[ProcessUsage]:
        """Every process with its CPU % since the previous sample (psutil keeps that per Process object)."""
        seen: dict[int, psutil.Process] = {}
        usage: list[ProcessUsage] = []
        for process in psutil.process_iter(["name"]):
            known = self._processes.get(process.pid, process)
            try:
                cpu = known.cpu_percent(interval=None)
                usage.append(
                    ProcessUsage(
                        pid=process.pid,
                        name=process.info.get("name") or "?",
                        cpu_percent=round(cpu, 1),
                        memory_percent=round(known.memory_percent(), 2),
                    )
                )
                seen[process.pid] = known
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self._processes = seen
        return usage


def _since_boot() -> float:
    times = psutil.cpu_times()
    total = sum(times)
    return round(100.0 * (1 - (times.idle + getattr(times, "iowait", 0.0)) / total), 1) if total else 0.0


def _rates(before: tuple, after: tuple, elapsed: float) -> tuple[float | None, ...]:
    (disk0, net0), (disk1, net1) = before, after
    if elapsed <= 0:
        return (None,) * 4

    def rate(a: object, b: object, attribute: str) -> float | None:
        if a is None or b is None:
            return None
        return round(max(0.0, (getattr(b, attribute) - getattr(a, attribute)) / elapsed), 1)

    return (
        rate(disk0, disk1, "read_bytes"),
        rate(disk0, disk1, "write_bytes"),
        rate(net0, net1, "bytes_sent"),
        rate(net0, net1, "bytes_recv"),
    )


def _disks() -> list[DiskUsage]:
    disks = []
    for partition in psutil.disk_partitions(all=False):
        if partition.fstype in _SKIP_FILESYSTEMS:
            continue
        try:
            usage = psutil.disk_usage(partition.mountpoint)
        except OSError:
            continue
        disks.append(DiskUsage(mount=partition.mountpoint, total_bytes=usage.total, used_bytes=usage.used, percent=usage.percent))
    if not disks:  # containers often list no real partition: report the root filesystem
        root = psutil.disk_usage("/")
        disks.append(DiskUsage(mount="/", total_bytes=root.total, used_bytes=root.used, percent=root.percent))
    return disks
