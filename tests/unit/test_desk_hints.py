"""`make desk` tells a newcomer where its notices are and how to read them."""

import shlex

from local_stack.desk_hints import reading_notices

ENV = {
    "PUBSUB_EMULATOR_HOST": "127.0.0.1:41234",
    "BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:45678",
}


def test_the_hints_name_the_emulators_and_give_a_command_for_each():
    where, topic, table = reading_notices(ENV, "section-speed-local", "demo", "notices-reader")
    assert "127.0.0.1:41234" in where and "http://127.0.0.1:45678" in where
    assert "section-speed-local.demo.notices" in where
    python, flag, code = shlex.split(topic.split(":  ", 1)[1])
    assert (python, flag) == (".venv/bin/python", "-c")
    compile(code, "<the topic's one-liner>", "exec")  # valid Python, quoted for the shell
    assert 'pubsub_clients("127.0.0.1:41234")' in code
    assert 'subscription="projects/section-speed-local/subscriptions/notices-reader"' in code
    assert "acknowledge" not in code  # reading leaves the notices for their consumer

    env, python, flag, code = shlex.split(table.split(":  ", 1)[1])
    assert (env, python, flag) == (
        "BIGQUERY_EMULATOR_HOST=http://127.0.0.1:45678",
        ".venv/bin/python",
        "-c",
    )
    compile(code, "<the one-liner>", "exec")  # valid Python, quoted for the shell
    assert "`section-speed-local.demo.notices`" in code
