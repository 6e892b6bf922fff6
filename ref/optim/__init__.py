"""Optimizers (SGD, SGDW, Adam) and learning-rate schedules (Cosine, MultiStep, Piecewise,
LinearWarmup, and the training lengths StopE and StopC).

    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    schedule = Cosine(0.1, epochs)
    for epoch in range(epochs):
        optimizer.lr = schedule(epoch)
        ...  loss.backward(); optimizer.step(); optimizer.zero_grad()
"""
from ref.optim.optimizers import SGD, SGDW, Adam, Optimizer
from ref.optim.schedules import (Cosine, LinearWarmup, MultiStep, PerEpoch, Piecewise, StopC,
                                 StopE)

__all__ = ["SGD", "SGDW", "Adam", "Cosine", "LinearWarmup", "MultiStep", "Optimizer", "PerEpoch",
           "Piecewise", "StopC", "StopE"]
