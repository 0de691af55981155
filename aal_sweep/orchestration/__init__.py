"""Running the sweep on Ray: the only package that imports Ray (its light modules do not: graph, state,
status, estimate, trials, events, screen answer without it).

    graph.py        the sweep as a graph of trials and what each needs (pure)
    searcher.py     GraphSearcher, the Tune Searcher that releases trials as their inputs are stored
    trainable.py    what runs on a worker: one trial, its checkpoints and rows
    driver.py       `aal-sweep run`: the lease, Ray, one Tune run, events out (callbacks.py: its callbacks)
    ray_connect.py  the embedded Ray or a cluster; what it can host
    submit.py       `aal-sweep submit`, through Ray's Jobs SDK
    state.py, status.py, estimate.py   what a results folder holds, `status`, `plan`
"""
