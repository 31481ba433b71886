"""Monitoring a deployed model: scheduled evaluation against the last stored run, online
metrics per served model from the UBI the sidecar records, and feature drift between the
training table and live traffic."""
