"""The paper's experiments, each one call that writes its table and figure: the toy example
(Fig. 1), Table 1, the sweeps (Figs. 2, 3, 4, 6, 7) and the adaptive-training comparison."""
