"""What the fuzzer runs: every decoder a session applies to bytes from a client (or a broker).

Pure and synchronous (no sockets, no Trio), so one input costs microseconds. An input
is ``selector byte + payload``; the selector picks the target:

* ``0`` framing: the payload as a byte stream, fed in small chunks to
  :class:`codec.framing.FrameDecoder` and :class:`codec.stream.FrameStream` (with a
  decider that reads each head as the session does); every frame found then goes
  through both request paths below.
* ``1`` a request without authorization: what the session does then (request header,
  the Produce ``acks`` and topic scanner, the SASL parsers and frame classifier).
* ``2`` a request with authorization: :func:`policies.authorization.authorize_request`
  with a real ACL engine (kio path included), then the whole-request refusal answer.
* ``3`` a response from a broker: ``decode_response`` for the API and version in the
  payload's first four bytes (the authorization transforms decode those).

A typed, expected error (:data:`EXPECTED`) is a clean outcome; any other exception is a
finding (atheris reports it), and so is a native abort (the supervisor in
:mod:`tests.fuzz.run` catches that in a child process).
"""

from __future__ import annotations

import contextlib
import struct
import uuid
from typing import Any, Final

from codec.framing import FrameDecoder, FrameError
from codec.headers import parse_request_header, peek_api
from codec.primitives import CodecError
from codec.produce import produce_acks, produce_topics
from codec.sasl import (
    classify_auth_frame,
    parse_sasl_authenticate_request,
    parse_sasl_handshake_request,
)
from codec.stream import BufferedFrame, Decision, FrameStream
from policies.acl.config import AuthorizationConfig
from policies.acl.engine import AclEngine
from policies.auth.principal import Principal
from policies.authorization import authorize_request
from policies.authorization.error_response import whole_request_error_response
from policies.authorization.messages import MessageError, decode_response

#: Clean outcomes: the connection would be closed with this error as its reason.
EXPECTED: Final = (CodecError, FrameError, MessageError)

PRODUCE: Final = 0
SASL_HANDSHAKE: Final = 17
SASL_AUTHENTICATE: Final = 36
TOPIC_AUTHORIZATION_FAILED: Final = 29
MAX_FRAME_BYTES: Final = 1 << 20
CHUNK: Final = 7

#: Some topics and groups allowed, the rest denied: both the forward and refuse paths run.
_ACL: Final = AclEngine(
    AuthorizationConfig.model_validate(
        {
            "rules": [
                {
                    "principals": ["User:alice"],
                    "resource_type": resource_type,
                    "pattern_type": "prefixed",
                    "resource_name": "a",
                    "operations": ["all"],
                }
                for resource_type in ("topic", "group", "transactional_id")
            ]
            + [
                {
                    "principals": ["User:alice"],
                    "resource_type": "cluster",
                    "operations": ["describe", "idempotent_write"],
                }
            ]
        }
    )
)
_KNOWN_TOPIC: Final = uuid.UUID(int=1)


class _Context:
    """The authorization context of one connection: principal, ACLs, topic ids it knows."""

    principal = Principal(name="alice", mechanism="PLAIN")
    authorizer = _ACL

    def topic_name(self, topic_id: uuid.UUID) -> str | None:
        return "a-topic" if topic_id == _KNOWN_TOPIC else None


_CONTEXT: Final = _Context()


def run_one(data: bytes) -> None:
    """Run one fuzz input; only :data:`EXPECTED` errors are swallowed."""
    if not data:
        return
    selector, payload = data[0] % 4, data[1:]
    try:
        if selector == 0:
            _framing(payload)
        elif selector == 1:
            _unauthorized_request(payload)
        elif selector == 2:
            _authorized_request(payload)
        else:
            _response(payload)
    except EXPECTED:
        pass


def _framing(stream: bytes) -> None:
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    frames: list[bytes] = []
    for start in range(0, len(stream), CHUNK):
        decoder.feed(stream[start : start + CHUNK])
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    requests = FrameStream(MAX_FRAME_BYTES, 64)
    buffered: list[bytes] = []
    for start in range(0, len(stream), CHUNK):
        for piece in requests.feed(stream[start : start + CHUNK], _decide):
            if isinstance(piece, BufferedFrame):
                buffered.append(bytes(piece.frame))
    assert buffered == frames, "FrameStream and FrameDecoder split the stream differently"
    for frame in frames[:4]:
        for path in (_unauthorized_request, _authorized_request):
            with contextlib.suppress(*EXPECTED):
                path(frame)


def _decide(head: memoryview, size: int) -> tuple[Decision, Any, None]:
    peek_api(head)  # the session closes the connection on a malformed head
    return Decision.BUFFER, None, None


def _unauthorized_request(frame: bytes) -> None:
    classify_auth_frame(frame, legacy_token_expected=False)
    header = parse_request_header(frame)
    body = memoryview(frame)[header.body_offset :]
    if header.api_key == PRODUCE:
        produce_acks(frame, header.body_offset, header.api_version)
        produce_topics(frame, header.body_offset, header.api_version)
    elif header.api_key == SASL_HANDSHAKE:
        parse_sasl_handshake_request(body, header.api_version)
    elif header.api_key == SASL_AUTHENTICATE:
        parse_sasl_authenticate_request(body, header.api_version)


def _authorized_request(frame: bytes) -> None:
    api_key, api_version, _ = peek_api(frame)
    try:
        authorize_request(_CONTEXT, api_key, api_version, frame)
    finally:  # a refused request is answered from the same bytes, decodable or not
        whole_request_error_response(frame, api_key, api_version, TOPIC_AUTHORIZATION_FAILED)


def _response(payload: bytes) -> None:
    if len(payload) < 4:
        return
    api_key, api_version = struct.unpack_from(">hh", payload)
    decode_response(payload[4:], api_key, api_version)
