"""Start-up checks with the real client libraries against the emulators and the cars API:
what exists passes, and each missing resource gives its message."""

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.startup_checks import (
    ConfigurationError,
    check_configuration,
    require_valid_configuration,
)

pytestmark = pytest.mark.integration

TOPIC, SUBSCRIPTION, DEAD = "sc-events", "sc-events-sub", "sc-dead"
OUTPUT, BUCKET = "sc-fines", "sc-evidence"


@pytest.fixture(scope="module")
def named(stack):
    stack.create_topics([TOPIC, OUTPUT, DEAD], {SUBSCRIPTION: TOPIC})
    stack.create_bucket(BUCKET)
    return stack


def options(stack, **values: str) -> PipelineOptions:
    flags = {
        "project_id": stack.project_id,
        "input_subscription": SUBSCRIPTION,
        "output_topic": OUTPUT,
        "dead_letter_topic": DEAD,
        "bucket": BUCKET,
        "cars_api": f"{stack.cars_api_url}/cars/{{vehicle_id}}",
        **values,
    }
    return PipelineOptions([f"--{name}={value}" for name, value in flags.items()])


def test_everything_named_exists(named):
    assert check_configuration(options(named)) == []
    # The course's form against the same API: GET /cars answers {"image_url"}.
    assert check_configuration(options(named, cars_api=f"{named.cars_api_url}/cars")) == []


def test_each_missing_resource_is_named_with_its_fix(named):
    project = named.project_id
    with pytest.raises(ConfigurationError) as raised:
        require_valid_configuration(
            options(
                named,
                input_subscription="sc-nosuch-sub",
                output_topic="sc-nosuch-topic",
                bucket="sc-nosuch-bucket",
                cars_api=f"{named.cars_api_url}/nothing-here",
            )
        )
    problems = str(raised.value).split("\n  - ")[1:]
    assert problems[:3] == [
        f"--input_subscription: projects/{project}/subscriptions/sc-nosuch-sub does not "
        f"exist: create it (`gcloud pubsub subscriptions create sc-nosuch-sub --project "
        f"{project} --topic TOPIC`) or name one that does",
        f"--output_topic: projects/{project}/topics/sc-nosuch-topic does not exist: create "
        f"it (`gcloud pubsub topics create sc-nosuch-topic --project {project}`) or name one "
        "that does",
        "--bucket sc-nosuch-bucket does not exist: create it (`gcloud storage buckets create "
        f"gs://sc-nosuch-bucket --project {project} --location REGION`), or leave --bucket "
        "out to keep the cars API's photo URLs without copies",
    ]
    assert problems[3].startswith(
        f"--cars_api {named.cars_api_url}/nothing-here answered, but not as a cars API ("
    )
    assert len(problems) == 4
