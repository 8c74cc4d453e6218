from test_checks import *
def test_x(env, chain_copy):
    add(chain_copy, "commits")
    r = cli("check", "--json")
    rep = json.loads(r.stdout)
    print(env.kind, r.exit_code, [(c["name"], c["status"], c.get("evidence")) for c in rep["checks"] if c["status"] != "passed"])
    assert 0
