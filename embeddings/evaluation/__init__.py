"""Judging cohorts: RFM baseline, goals and labels, backtests, and the experiment framework."""
