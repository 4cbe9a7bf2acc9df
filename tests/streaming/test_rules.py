"""Rules compile to Python callables and translate to DuckDB SQL with the same answers."""

import duckdb
import pytest

from streaming.rules import RuleSyntaxError, compile_rule, to_sql, variables

RULES = [
    {"==": [{"var": "ua_crawler"}, True]},
    {"and": [{">=": [{"var": "session_event_count"}, 5]}, {"<": [{"var": "interval_std_s"}, 0.5]}]},
    {"or": [{"in": ["bot", {"var": "user_agent"}]}, {"in": [{"var": "asn"}, ["AMAZON-02", "OVH SAS"]]}]},
    {"!": {">": [{"var": "events_per_minute"}, 30]}},
    {">": [{"/": [{"var": "cart_value"}, {"var": "session_event_count"}]}, 10]},
    {"<": [1, {"var": "page_views"}, 4]},
    {"!!": {"var": "datacenter"}},
]

ROWS = [
    {"ua_crawler": True, "session_event_count": 6, "interval_std_s": 0.1, "user_agent": "curl-bot", "asn": "OVH SAS",
     "events_per_minute": 40.0, "cart_value": 100.0, "page_views": 2, "datacenter": True},
    {"ua_crawler": False, "session_event_count": 0, "interval_std_s": None, "user_agent": None, "asn": None,
     "events_per_minute": None, "cart_value": 5.0, "page_views": None, "datacenter": None},
    {"ua_crawler": False, "session_event_count": 9, "interval_std_s": 3.0, "user_agent": "Mozilla/5.0",
     "asn": "Comcast", "events_per_minute": 3.0, "cart_value": 0.0, "page_views": 5, "datacenter": False},
]


@pytest.mark.parametrize("rule", RULES)
def test_python_and_duckdb_give_the_same_answer(rule):
    con = duckdb.connect()
    con.execute("""create table facts(ua_crawler boolean, session_event_count double, interval_std_s double,
                   user_agent varchar, asn varchar, events_per_minute double, cart_value double, page_views double,
                   datacenter boolean)""")
    cols = list(ROWS[0])
    con.executemany(f"insert into facts values ({','.join('?' * len(cols))})", [[r[c] for c in cols] for r in ROWS])
    sql_answers = [row[0] for row in con.execute(f"select {to_sql(rule)} from facts").fetchall()]
    py_answers = [compile_rule(rule)(row) for row in ROWS]
    assert sql_answers == py_answers
    assert all(isinstance(a, bool) for a in sql_answers)


def test_missing_values_make_comparisons_false_not_errors():
    assert compile_rule({">": [{"var": "x"}, 1]})({}) is False
    assert compile_rule({"!": {">": [{"var": "x"}, 1]}})({}) is True


def test_unknown_operator_names_the_path():
    with pytest.raises(RuleSyntaxError, match=r"\$\.and\[1\]: unknown operator 'regex'"):
        compile_rule({"and": [True, {"regex": ["a", "b"]}]})


def test_variables_lists_what_a_rule_reads():
    assert variables(RULES[1]) == {"session_event_count", "interval_std_s"}
