def setup(network, cid, ips): raise NotImplementedError
def teardown(network, cid): pass
def check(network, cid, ips): return []
