"""Benchmarking on a remote edge device (a Jetson) from a workstation: an SSH transport, and parsers
for what the device prints (trtexec's timing report, nvpmodel, the L4T/JetPack release, tegrastats).

Nothing here runs at import time; every module is plain functions and frozen dataclasses.
"""
