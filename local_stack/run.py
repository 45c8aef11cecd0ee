"""The pipeline running against the local stack, as the demo, tests and benchmarks use it.

`LocalPipeline` creates the topics and subscriptions, starts `python -m pipeline` on
the BundleBasedDirectRunner as a child of the stack (so it is stopped with it), and
waits until it reads. `OutputCollector` receives what the pipeline publishes.
"""

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import timestamp_pb2

from local_stack.processes import ManagedProcess, wait_until
from local_stack.services import LocalStack, pubsub_clients
from section_speed.domain import defaults
from section_speed.domain.rules import SectionCatalog, SectionRule

_log = logging.getLogger(__name__)

READY_LINE = "pipeline running"  # logged by pipeline.graph.start once the job is launched


@dataclass(frozen=True)
class LocalTopics:
    """Short names of the Pub/Sub resources a local run uses."""

    input_topic: str = defaults.INPUT_TOPIC
    input_subscription: str = defaults.INPUT_SUBSCRIPTION
    output_topic: str = defaults.OUTPUT_TOPIC
    output_subscription: str = defaults.OUTPUT_TOPIC + "-reader"
    dead_letter_topic: str = defaults.DEAD_LETTER_TOPIC
    dead_letter_subscription: str = defaults.DEAD_LETTER_TOPIC + "-reader"

    def create(self, stack: LocalStack) -> None:
        stack.create_topics(
            [self.input_topic, self.output_topic, self.dead_letter_topic],
            {
                self.output_subscription: self.output_topic,
                self.dead_letter_subscription: self.dead_letter_topic,
            },
        )
        # The input keeps acknowledged messages, so that a restarted pipeline can replay
        # the sessions it had open (Pub/Sub seek), as an operator would on Google Cloud.
        _, subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
        with subscriber:
            subscriber.create_subscription(
                request={
                    "name": stack.subscription_path(self.input_subscription),
                    "topic": stack.topic_path(self.input_topic),
                    "ack_deadline_seconds": 60,
                    "retain_acked_messages": True,
                }
            )


@dataclass
class LocalPipeline:
    stack: LocalStack
    topics: LocalTopics = field(default_factory=LocalTopics)
    session_gap_seconds: int = defaults.SESSION_GAP_SECONDS
    allowed_lateness_seconds: int = defaults.ALLOWED_LATENESS_SECONDS
    extra_args: list[str] = field(default_factory=list)
    process: ManagedProcess | None = None
    bucket: str = defaults.EVIDENCE_BUCKET
    # radar_id -> its rule, passed as --sections_file: a section-average fine needs the
    # section's ends (docs/enforcement.md).
    sections: dict[str, SectionRule] = field(default_factory=dict)

    def evidence_args(self) -> list[str]:
        """Fine evidence on when the stack runs the cars API (and storage for the photos)."""
        if not self.stack.cars_api_url:
            return []
        cars_api = f"{self.stack.cars_api_url}/cars/{{vehicle_id}}"  # this project's form
        return ["--cars_api", cars_api, "--bucket", self.bucket]

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "pipeline",
            "--runner", "BundleBasedDirectRunner", "--streaming",
            "--project_id", self.stack.project_id,
            "--input_subscription", self.topics.input_subscription,
            "--output_topic", self.topics.output_topic,
            "--dead_letter_topic", self.topics.dead_letter_topic,
            "--session_gap_seconds", str(self.session_gap_seconds),
            "--allowed_lateness_seconds", str(self.allowed_lateness_seconds),
            *self.evidence_args(),
            *self.sections_args(),
            *self.extra_args,
        ]  # fmt: skip

    def sections_args(self) -> list[str]:
        if not self.sections:
            return []
        path = self.stack.work_dir / f"sections-{self.topics.input_topic}.json"
        path.write_text(SectionCatalog(SectionRule(), self.sections).to_json(), encoding="utf-8")
        return ["--sections_file", str(path)]

    def provision(self) -> None:
        """What an operator creates before a launch: the bucket, the warehouse's tables."""
        if self.evidence_args():
            self.stack.create_bucket(self.bucket)
        if "--bq_dataset" in self.extra_args:
            dataset = self.extra_args[self.extra_args.index("--bq_dataset") + 1]
            self.stack.provision_warehouse(dataset)

    def start(self, timeout_s: float = 180.0) -> ManagedProcess:
        """Start the pipeline and wait until it has launched (or fail with its log)."""
        self.provision()
        log_path = self.stack.work_dir / "pipeline.log"
        earlier = log_path.stat().st_size if log_path.exists() else 0  # a restart appends
        process = self.stack.spawn("pipeline", self.argv())
        self.process = process

        def launched() -> bool:
            if not process.running():
                raise RuntimeError(f"pipeline exited at start:\n{process.log_tail(40)}")
            with log_path.open("rb") as log:
                log.seek(earlier)
                return READY_LINE.encode() in log.read()

        wait_until(launched, timeout_s=timeout_s, what="the pipeline to start", interval_s=0.25)
        return process

    def restart(self, timeout_s: float = 180.0) -> ManagedProcess:
        """Stop the pipeline and start it again, replaying what its open sessions had read.

        The direct runner acknowledges messages when it pulls them and keeps session state
        in memory, so a stop loses the open sessions. The input subscription is sought
        back by gap + allowed lateness (the oldest detection that can still count):
        their detections are read again. Traversals that had already fired fire again
        too, with the same ids and insert ids: the analysts' queries count each once.
        """
        if self.process is not None:
            stopped_at = time.time()
            self.process.stop()
            self.seek_input(stopped_at - self.session_gap_seconds - self.allowed_lateness_seconds)
        return self.start(timeout_s)

    def seek_input(self, to_epoch_s: float) -> None:
        when = timestamp_pb2.Timestamp()
        when.FromMilliseconds(int(to_epoch_s * 1000))
        _, subscriber = pubsub_clients(self.stack.env["PUBSUB_EMULATOR_HOST"])
        with subscriber:
            subscriber.seek(
                request={
                    "subscription": self.stack.subscription_path(self.topics.input_subscription),
                    "time": when,
                }
            )

    def input_topic_path(self) -> str:
        return self.stack.topic_path(self.topics.input_topic)


COURSE_RADAR_ID = "Adriana"  # the course's example radar id


@dataclass
class CourseCommandPipeline(LocalPipeline):
    """This project's pipeline started with the course's command line, as a student would,
    plus the local runner's flags: no `--bucket`, the cars API in the course's `GET URL`
    form. A session gap or lateness other than the pipeline's defaults is passed as a flag.
    """

    radar_id: str = COURSE_RADAR_ID

    def evidence_args(self) -> list[str]:
        return []  # the course's form: no --bucket, so no bucket to create

    def argv(self) -> list[str]:
        stack, topics = self.stack, self.topics
        argv = [
            sys.executable, "-m", "pipeline",
            "--project_id", stack.project_id,
            "--input_subscription", stack.subscription_path(topics.input_subscription),
            "--output_topic", stack.topic_path(topics.output_topic),
            "--radar_id", self.radar_id,
            "--cars_api", f"{stack.cars_api_url}/cars",  # the course's contract: GET URL
            "--runner", "BundleBasedDirectRunner", "--streaming",
            "--dead_letter_topic", stack.topic_path(topics.dead_letter_topic),
        ]  # fmt: skip
        if self.session_gap_seconds != defaults.SESSION_GAP_SECONDS:
            argv += ["--session_gap_seconds", str(self.session_gap_seconds)]
        if self.allowed_lateness_seconds != defaults.ALLOWED_LATENESS_SECONDS:
            argv += ["--allowed_lateness_seconds", str(self.allowed_lateness_seconds)]
        return [*argv, *self.extra_args]


class OutputCollector:
    """Receives JSON messages from a subscription on a background streaming pull."""

    def __init__(
        self,
        stack: LocalStack,
        subscription: str,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        producer: ManagedProcess | None = None,
    ) -> None:
        self.producer = producer  # when it dies, waiting is over: fail with its log
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.messages: list[dict[str, Any]] = []
        self._on_message = on_message
        self._publisher, self._subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
        self._future = self._subscriber.subscribe(
            stack.subscription_path(subscription), callback=self._receive
        )

    def _receive(self, message: Any) -> None:
        try:
            record = json.loads(message.data)
        except ValueError:
            record = {"undecodable": message.data.decode("utf-8", "replace")}
        with self._changed:
            self.messages.append(record)
            self._changed.notify_all()
        message.ack()
        if self._on_message is not None:
            self._on_message(record)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout_s: float) -> bool:
        """Block until `predicate(messages)` holds or `timeout_s` passes; return whether it held.

        Raises RuntimeError, with the producer's log, if the producing pipeline has exited.
        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self.messages):
                if self.producer is not None and not self.producer.running():
                    raise RuntimeError(
                        f"{self.producer.name} exited while waiting for its output:\n"
                        f"{self.producer.log_tail(40)}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(timeout=min(remaining, 1.0))
            return True

    def close(self) -> None:
        self._future.cancel()
        try:
            self._future.result(timeout=10)
        except Exception:
            pass
        self._subscriber.close()
        self._publisher.transport.close()
