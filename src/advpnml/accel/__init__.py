"""Near the hardware: what the engine and the trainer use to run fast, each with the same values as the plain path.

- :mod:`~advpnml.accel.graphs`: CUDA-graph capture of a fixed-shape step or attack run (eager off CUDA);
- :mod:`~advpnml.accel.precision`: bf16 autocast and its agreement with fp32;
- :mod:`~advpnml.accel.flops`: a FLOP counter and the devices' dense peaks;
- :mod:`~advpnml.accel.allocator`: glibc's allocator tuned so the N x C hypotheses are not page-faulted in per call.

Nothing is imported here: each module is loaded where it is used.
"""
