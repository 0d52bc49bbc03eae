"""The manager: one per environment. Watches every resource group's queue, scales its consumers.

policy (pure decide) · observe (Redis -> frozen observations) · reconcile (observe -> decide -> act)
· backends (local processes; Kubernetes later) · runner (process entry points).
"""
