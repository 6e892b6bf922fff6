"""Naive loop definitions of the ops, in float64: the math written out, not an implementation.

Tests compare each ref op (and, through the backend tests, each gpu op) against these.
"""
import numpy as np
