"""The rules a plan is made of, one file a rule, each a pure function that returns a fragment of the plan
(its actions, blockers and diffs, or a transformation as a returned value). Only `controller/app/decide.py`
composes them (tests/test_one_plan.py checks it): read it for their order and precedence.
"""
