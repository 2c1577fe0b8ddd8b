"""The shared server fixtures answer on the wire."""

from __future__ import annotations

import pytest
from aiobotocore.session import get_session

pytestmark = pytest.mark.integration


async def test_moto_server_serves_sqs(moto_server: str, aws_env: None) -> None:
    session = get_session()
    async with session.create_client(
        "sqs", endpoint_url=moto_server, region_name="us-east-1"
    ) as sqs:
        url = (await sqs.create_queue(QueueName="fixture-check"))["QueueUrl"]
        await sqs.send_message(QueueUrl=url, MessageBody="hi")
        got = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
        assert [m["Body"] for m in got["Messages"]] == ["hi"]


async def test_rabbitmq_accepts_a_connection(rabbitmq_url: str) -> None:
    import aio_pika

    conn = await aio_pika.connect_robust(rabbitmq_url)
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue("", exclusive=True)
        assert queue.name
    finally:
        await conn.close()
