"""`kdedge bench` on the measuring machine: the runtimes (runtimes.py), timing (timing.py), MAC count
(macs.py), the test-split file (split_file.py), the Jetson's tools and their parsers (jetson.py,
jetson_parse.py, trtexec.py, trtexec_parse.py) and the report (report.py). The pipeline that uses
them is kdedge/stages/bench.py; nothing here imports kdedge.stages.
"""
