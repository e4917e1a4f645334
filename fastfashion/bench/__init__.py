"""Tools on top of everything else: loader and training throughput (:mod:`.throughput`, :mod:`.training`), the
seed-style baseline they compare against (:mod:`.baseline`), figures (:mod:`.plots`) and the end-to-end demo
(:mod:`.demo`). This layer may import every other layer except the CLI.
"""
