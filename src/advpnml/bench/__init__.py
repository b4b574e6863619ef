"""Speed measurements: ``advpnml bench`` (:mod:`~advpnml.bench.speed`: the defense against its compute floor and naive
loops, PGD against torchattacks) and ``bench --accel`` (:mod:`~advpnml.bench.hardware`: FLOPs, TFLOP/s and the fraction
of the device's peak per variant). The scripts in ``benchmarks/`` call these."""
