"""Independent check of the adaptive collapse on the robust advertorch LeNet-5: attack through the
defense, then recompute log q with the naive reference loop and check the threat model."""
import time, torch, advpnml
from advpnml.attacks import PGD
from advpnml.benchmark import loop_over_hypotheses
torch.set_num_threads(2)
model = advpnml.load_external("../shared/data/weights/advertorch_mnist_lenet5/mnist_lenet5_advtrained.pt", "advertorch_lenet5").eval()
data = advpnml.load_dataset("mnist", "test", data_dir="../shared/data/mnist", n=100)
x, y = data.x, data.y
defended = advpnml.AdversarialPnml(model, 0.1)
t = time.time()
x_adv = PGD(0.3, steps=100, step_size=0.01, loss="margin")(defended, x, y)
print("attack s", time.time() - t)
print("max |dx|", (x_adv - x).abs().max().item(), "range", x_adv.min().item(), x_adv.max().item())
with torch.no_grad():
    ref_clean = loop_over_hypotheses(model, x, 0.1).argmax(1)
    ref_adv = loop_over_hypotheses(model, x_adv, 0.1).argmax(1)
    base_adv = model(x_adv).argmax(1)
    lib_adv = defended(x_adv).argmax(1)
print("defense clean acc (reference loop)", (ref_clean == y).float().mean().item())
print("defense adv acc (reference loop)", (ref_adv == y).float().mean().item(), "library", (lib_adv == y).float().mean().item())
print("base model on the same x_adv", (base_adv == y).float().mean().item())
print("base model clean", (model(x).argmax(1) == y).float().mean().item())

# Our reading of the mechanism: the refinement gives every label, wrong ones included, a free targeted
# step of size lambda, so the attacker effectively works at eps + lambda against the wrong label's hypothesis.
for radius in (0.3, 0.4):
    x_base = PGD(radius, steps=100, step_size=0.01, restarts=1)(model, x, y)
    with torch.no_grad():
        print(f"base model under PGD-100 at eps {radius}:", (model(x_base).argmax(1) == y).float().mean().item())
