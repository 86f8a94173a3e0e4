"""Plausible wrong answers to ps3_adversarial_training that pass the visible tests but not the hidden ones.

Each entry: name -> (solution cell replaced, the one test cell it must fail, code).
tests/test_assignments.py autogrades each and checks it loses exactly that test's points.
(Part B's test grades with a correct ramp_eps, so a wrong ramp costs Part A's points only.)
"""

WRONG_ANSWERS = {
    "bug_ramp_no_zero_case": ("ramp_eps", "test_ramp_eps", """\
def ramp_eps(batch: int, eps: float, ramp_batches: int) -> float:
    if batch < 0 or eps < 0 or ramp_batches < 0:
        raise ValueError(f"batch, eps and ramp_batches must be >= 0, got {batch}, {eps}, {ramp_batches}")
    return eps * min(1.0, batch / ramp_batches)  # BUG: ramp_batches = 0 (no ramp) divides by zero
"""),
    "bug_epoch_no_train_mode": ("adversarial_training_epoch", "test_adversarial_training_epoch", """\
def adversarial_training_epoch(model, loader, optimizer, attack, eps, first_batch=0, ramp_batches=0):
    # BUG: no model.train(): a model handed over in eval mode is trained in eval mode
    total_loss, correct, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(loader):
        eps_t = ramp_eps(first_batch + i, eps, ramp_batches)
        x_adv = attack(model, x, y, eps_t).detach() if eps_t > 0 else x
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    if seen == 0:
        raise ValueError("the loader yielded no batch")
    return total_loss / seen, correct / seen
"""),
    "bug_epoch_gradient_through_attack": ("adversarial_training_epoch", "test_adversarial_training_epoch", """\
def adversarial_training_epoch(model, loader, optimizer, attack, eps, first_batch=0, ramp_batches=0):
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(loader):
        eps_t = ramp_eps(first_batch + i, eps, ramp_batches)
        x_adv = attack(model, x, y, eps_t) if eps_t > 0 else x  # BUG: not detached (Danskin)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    if seen == 0:
        raise ValueError("the loader yielded no batch")
    return total_loss / seen, correct / seen
"""),
    "bug_epoch_ramp_restarts": ("adversarial_training_epoch", "test_adversarial_training_epoch", """\
def adversarial_training_epoch(model, loader, optimizer, attack, eps, first_batch=0, ramp_batches=0):
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(loader):
        eps_t = ramp_eps(i, eps, ramp_batches)  # BUG: the ramp restarts every epoch (first_batch ignored)
        x_adv = attack(model, x, y, eps_t).detach() if eps_t > 0 else x
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    if seen == 0:
        raise ValueError("the loader yielded no batch")
    return total_loss / seen, correct / seen
"""),
    "bug_table_transfer_attack": ("evaluation_table", "test_evaluation_table", """\
def evaluation_table(models, attacks, x, y, batch_size=256):
    table = {name: {} for name in attacks}
    first = next(iter(models.values()))
    for attack_name, attack in attacks.items():
        # BUG: adversarial examples made once, against the first model, and reused for every model
        first_mode = first.training
        first.eval()
        x_adv = torch.cat([attack(first, x[i:i + batch_size], y[i:i + batch_size]) if attack is not None
                           else x[i:i + batch_size] for i in range(0, len(y), batch_size)])
        first.train(first_mode)
        for model_name, model in models.items():
            was_training = model.training
            model.eval()
            with torch.no_grad():
                correct = sum((model(x_adv[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                              for i in range(0, len(y), batch_size))
            model.train(was_training)
            table[attack_name][model_name] = correct / len(y)
    return table
"""),
    "bug_table_train_mode": ("evaluation_table", "test_evaluation_table", """\
def evaluation_table(models, attacks, x, y, batch_size=256):
    table = {name: {} for name in attacks}
    for model_name, model in models.items():
        # BUG: no model.eval(): dropout stays on while attacking and predicting
        for attack_name, attack in attacks.items():
            correct = 0
            for i in range(0, len(y), batch_size):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                if attack is not None:
                    xb = attack(model, xb, yb)
                with torch.no_grad():
                    correct += (model(xb).argmax(1) == yb).sum().item()
            table[attack_name][model_name] = correct / len(y)
    return table
"""),
}
