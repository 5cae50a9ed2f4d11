"""`kdedge bench --host`: running the benchmark on another machine (a Jetson) from a workstation: the
ssh target (target.py), the SSH transport (ssh.py) and the job that sends a run's bundle, runs
`kdedge bench` there and brings the report back (bench_job.py). What runs on the device itself is
kdedge.bench.
"""
