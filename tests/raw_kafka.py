"""A raw, blocking Kafka connection for tests that must control every byte on the wire.

Requests and responses are encoded and decoded with kio (generated from Kafka's own
schemas), independently of the gateway's hand-written codec. The one raw SASL login of
the suite is here too: ``sasl_handshake`` then ``sasl_token`` per client token, in either
flow the handshake version picks (``plain_login`` for the common PLAIN case).
"""

from __future__ import annotations

import io
import socket
import struct
from dataclasses import dataclass
from typing import Any

from kio.index import load_response_schema
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v0.request import SaslHandshakeRequest as SaslHandshakeV0
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest as SaslHandshakeV1
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i16, i32

from codec.headers import request_header_version, response_body_offset
from policies.auth import plain_client_token


@dataclass(frozen=True)
class SaslAnswer:
    """The server's answer to one client token: its error code (0 in the legacy flow,
    where a failure closes the connection instead) and its token."""

    error_code: int
    auth_bytes: bytes


class RawKafkaConnection:
    def __init__(self, address: str, timeout: float = 10, source_host: str | None = None) -> None:
        """``source_host`` (e.g. ``127.0.0.2``) makes the connection come from another IP."""
        host, port = address.rsplit(":", 1)
        source = (source_host, 0) if source_host is not None else None
        self.sock = socket.create_connection(
            (host, int(port)), timeout=timeout, source_address=source
        )
        self._buf = b""
        self._legacy_sasl = False
        self._sasl_correlation_id = 1

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawKafkaConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_request(self, request: Any, correlation_id: int, client_id: str = "raw-test") -> None:
        api_key, version = int(request.__api_key__), int(request.__version__)
        header_cls = (
            RequestHeaderV2 if request_header_version(api_key, version) == 2 else RequestHeaderV1
        )
        header = header_cls(
            request_api_key=i16(api_key),
            request_api_version=i16(version),
            correlation_id=i32(correlation_id),
            client_id=client_id,
        )
        buf = io.BytesIO()
        entity_writer(header_cls)(buf, header)
        entity_writer(type(request))(buf, request)
        self.send_frame(buf.getvalue())

    def send_frame(self, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> bytes:
        while True:
            if len(self._buf) >= 4:
                (size,) = struct.unpack_from(">i", self._buf)
                if len(self._buf) >= 4 + size:
                    frame, self._buf = self._buf[4 : 4 + size], self._buf[4 + size :]
                    return frame
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by peer")
            self._buf += chunk

    def read_response(self, api_key: int, version: int) -> tuple[int, Any]:
        """Read one response and decode it with kio: (correlation id, response object)."""
        frame = self.read_frame()
        (correlation_id,) = struct.unpack_from(">i", frame)
        offset = response_body_offset(frame, api_key, version)
        schema = load_response_schema(api_key, version)
        response, _ = decode_body(schema, frame[offset:])
        return correlation_id, response

    def request(self, request: Any, correlation_id: int = 1) -> Any:
        self.send_request(request, correlation_id)
        got, response = self.read_response(int(request.__api_key__), int(request.__version__))
        assert got == correlation_id, f"expected correlation id {correlation_id}, got {got}"
        return response

    def sasl_handshake(self, mechanism: str, version: int = 1) -> Any:
        """SaslHandshake (correlation id 1); the decoded answer. The version picks the flow
        of the tokens that follow: v1 (KIP-152) wraps each in a SaslAuthenticate request,
        v0 (legacy) sends them as bare size-prefixed frames with no request header."""
        self._legacy_sasl = version == 0
        self._sasl_correlation_id = 1
        handshake = SaslHandshakeV0 if version == 0 else SaslHandshakeV1
        return self.request(handshake(mechanism=mechanism), self._sasl_correlation_id)

    def sasl_token(self, token: bytes) -> SaslAnswer:
        """Send one client token in the flow the handshake chose; the server's answer.

        A refusal in the legacy flow closes the connection: ``ConnectionError``.
        """
        if self._legacy_sasl:
            self.send_frame(token)
            return SaslAnswer(0, self.read_frame())
        self._sasl_correlation_id += 1
        request = SaslAuthenticateRequest(auth_bytes=token)  # v2
        response = self.request(request, self._sasl_correlation_id)
        return SaslAnswer(int(response.error_code), bytes(response.auth_bytes))

    def plain_login(self, user: str, password: str, handshake_version: int = 1) -> SaslAnswer:
        """A SASL PLAIN login: the handshake's error, or the answer to the token (after a
        v0 handshake, success is the empty token)."""
        handshake = self.sasl_handshake("PLAIN", handshake_version)
        if handshake.error_code != 0:
            return SaslAnswer(int(handshake.error_code), b"")
        return self.sasl_token(plain_client_token(user, password))

    def is_closed_by_peer(self, timeout: float = 10) -> bool:
        """True once the peer has closed the connection (reads return EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def decode_body(schema: Any, body: bytes) -> tuple[Any, int]:
    return entity_reader(schema)(memoryview(body).toreadonly(), 0)  # type: ignore[no-any-return]
