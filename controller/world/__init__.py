"""world: the boundary between the controller and the host. `protocol.World` is the one seam every read and change
goes through; `facts` and `verification` are what observation finds (plain values), `actions` the steps a plan is
made of, `secrets` the references and fingerprints of secrets, and `fake.FakeWorld` the in-memory host the
property tests run on (kept honest by tests/test_contract.py)."""
