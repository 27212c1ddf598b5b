"""How a cloud attempt reaches its function: one executor per provider, one interface.

Each executor hands over the attempt's invocation (task, payload, callback URL, attempt,
key, deadline) and returns once the provider has accepted it; the function calls back
later like any agent. A refusal raises DispatchError (a failed attempt, retried by the
operator's policy). ``health`` answers the Agent's Healthy condition.

- ``http``: POST to any HTTPS function (Cloud Functions, Cloud Run, ...), auth header
  from a Secret.
- ``azure-functions``: POST to the HTTP trigger with the function key (``x-functions-key``)
  from a Secret. Azure ends HTTP-triggered executions after 230 s, so the function must
  answer at once and do the work after (agent_images/azure_functions does).
- ``aws-lambda``: boto3 ``Invoke`` with ``InvocationType=Event``. boto3 blocks, so every
  call runs in a worker thread; throttling and 5xx are retried here with capped backoff
  (boto3's own retries are off, so each retry is counted and bounded once); a payload over
  Lambda's asynchronous limit is refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from wallestars_operator.idtokens import IdTokenError, IdTokens

# Lambda's limit for an asynchronous (Event) invocation's payload.
LAMBDA_ASYNC_LIMIT = 1024 * 1024
LAMBDA_ATTEMPTS = 4  # one call and up to three retries of throttling / 5xx
LAMBDA_BACKOFF = (0.2, 2.0)  # first delay, cap (seconds)

SecretReader = Callable[[str, str], Awaitable[str | None]]  # (name, key) -> value


class DispatchError(Exception):
    """The provider did not accept the invocation."""


class Executor(Protocol):
    async def invoke(self, cloud: Mapping[str, Any], body: bytes, secret: SecretReader) -> None: ...

    async def health(self, cloud: Mapping[str, Any], secret: SecretReader) -> str | None:
        """None when the function can take work, else why not."""
        ...


def backoff(
    attempt: int, first: float = LAMBDA_BACKOFF[0], cap: float = LAMBDA_BACKOFF[1]
) -> float:
    """Delay before retry ``attempt`` (1-based): doubling, capped (pure)."""
    return float(min(cap, first * 2 ** (attempt - 1)))


def retryable_aws_error(status: int, code: str) -> bool:
    """Throttling and server-side errors may succeed later; anything else will not."""
    return (
        status == 429
        or status >= 500
        or code in ("TooManyRequestsException", "ThrottlingException")
    )


async def secret_header(
    ref: Mapping[str, Any] | None, secret: SecretReader, default_header: str
) -> dict[str, str]:
    if not ref:
        return {}
    value = await secret(ref["name"], ref["key"])
    if value is None:
        raise DispatchError(f"Secret {ref['name']} has no key {ref['key']}")
    return {ref.get("header", default_header): value}


def plain_http_refused(url: str, where: str) -> str | None:
    """Why a function URL may not be used when plain http is not allowed, or None (pure)."""
    if url.lower().startswith("https://"):
        return None
    return (
        f"{where} must be an https:// URL: the invocation carries the attempt's key and "
        "the Agent's credentials (plain http is allowed only by the installation's "
        "development setting WALLESTARS_INSECURE_DEVELOPMENT_ALLOW_PLAIN_HTTP)"
    )


@dataclass
class HttpExecutor:
    """Any HTTPS function; Azure Functions' HTTP trigger is the same with its key header."""

    key_header: str = "Authorization"
    section: str = "http"
    url_field: str = "url"
    ref_field: str = "authHeaderSecretRef"
    allow_plain_http: bool = False
    session: aiohttp.ClientSession | None = None
    id_tokens: IdTokens | None = None  # googleIdToken auth (http Agents)

    def refused(self, url: str, field_name: str) -> str | None:
        if self.allow_plain_http:
            return None
        return plain_http_refused(url, f"spec.cloud.{self.section}.{field_name}")

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        return self.session

    async def invoke(self, cloud: Mapping[str, Any], body: bytes, secret: SecretReader) -> None:
        conf = cloud.get(self.section) or {}
        if why := self.refused(conf[self.url_field], self.url_field):
            raise DispatchError(why)  # before any Secret is read or byte is sent
        headers = {"Content-Type": "application/json"}
        headers.update(await secret_header(conf.get(self.ref_field), secret, self.key_header))
        headers.update(await self.id_token_header(conf, secret))
        timeout = aiohttp.ClientTimeout(total=float(cloud.get("timeoutSeconds", 30)))
        # No redirects: one could lead the key and credentials to a plain http:// URL.
        async with self._session().post(
            conf[self.url_field], data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as r:
            text = (await r.text())[:300]
            if r.status >= 300:
                raise DispatchError(f"the function answered HTTP {r.status}: {text}")

    async def id_token_header(
        self, conf: Mapping[str, Any], secret: SecretReader
    ) -> dict[str, str]:
        """Authorization with a Google ID token, when the Agent asks for one."""
        gid = conf.get("googleIdToken")
        if not gid or self.id_tokens is None:
            return {}
        ref = gid["serviceAccountSecretRef"]
        key = ref.get("key", "key.json")
        key_json = await secret(ref["name"], key)
        if key_json is None:
            raise DispatchError(f"Secret {ref['name']} has no key {key}")
        try:
            token = await self.id_tokens.get(key_json, gid.get("audience") or conf[self.url_field])
        except IdTokenError as e:
            raise DispatchError(str(e)) from e
        return {"Authorization": f"Bearer {token}"}

    async def health(self, cloud: Mapping[str, Any], secret: SecretReader) -> str | None:
        url = (cloud.get(self.section) or {}).get("healthURL")
        if not url:
            return None  # nothing to probe: healthy until an invocation says otherwise
        if why := self.refused(url, "healthURL"):
            return why
        try:
            async with self._session().get(
                url, timeout=aiohttp.ClientTimeout(total=10), allow_redirects=False
            ) as r:
                return None if r.status < 300 else f"health check {url} answered HTTP {r.status}"
        except (aiohttp.ClientError, TimeoutError) as e:
            return f"health check {url} failed: {e or type(e).__name__}"

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def azure_executor(allow_plain_http: bool = False) -> HttpExecutor:
    return HttpExecutor(
        "x-functions-key", "azure", "functionURL", "functionKeySecretRef", allow_plain_http
    )


@dataclass
class LambdaExecutor:
    """AWS Lambda through boto3 (credentials: the default chain, e.g. IRSA, or a Secret)."""

    clients: dict[tuple[str, ...], Any] = field(default_factory=dict)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def client(self, cloud: Mapping[str, Any], secret: SecretReader) -> Any:
        import boto3  # only operators with Lambda agents pay for importing boto3
        from botocore.config import Config

        aws = cloud.get("aws") or {}
        creds: dict[str, str] = {}
        ref = aws.get("credentialsSecretRef")
        if ref:
            for key, arg in (("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
                             ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
                             ("AWS_SESSION_TOKEN", "aws_session_token")):  # fmt: skip
                value = await secret(ref["name"], key)
                if value is not None:
                    creds[arg] = value
            if "aws_access_key_id" not in creds or "aws_secret_access_key" not in creds:
                raise DispatchError(
                    f"Secret {ref['name']} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                )
        cache_key = (aws.get("region", ""), aws.get("endpointURL", ""), *sorted(creds.values()))
        if cache_key not in self.clients:
            timeout = float(cloud.get("timeoutSeconds", 30))
            config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                            connect_timeout=min(timeout, 10), read_timeout=timeout)  # fmt: skip
            self.clients[cache_key] = await asyncio.to_thread(
                boto3.client, "lambda", region_name=aws.get("region") or None,
                endpoint_url=aws.get("endpointURL") or None, config=config, **creds,
            )  # fmt: skip
        return self.clients[cache_key]

    async def invoke(self, cloud: Mapping[str, Any], body: bytes, secret: SecretReader) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if len(body) > LAMBDA_ASYNC_LIMIT:
            raise DispatchError(
                f"the invocation is {len(body)} bytes, over Lambda's {LAMBDA_ASYNC_LIMIT}-byte "
                "limit for asynchronous invocations: make spec.payload smaller"
            )
        aws = cloud.get("aws") or {}
        args: dict[str, Any] = {"FunctionName": aws["functionName"], "InvocationType": "Event",
                                "Payload": body}  # fmt: skip
        if aws.get("qualifier"):
            args["Qualifier"] = aws["qualifier"]
        client = await self.client(cloud, secret)
        for n in range(1, LAMBDA_ATTEMPTS + 1):
            try:
                out = await asyncio.to_thread(client.invoke, **args)
            except ClientError as e:
                status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                code = str(e.response.get("Error", {}).get("Code", ""))
                if not retryable_aws_error(status, code) or n == LAMBDA_ATTEMPTS:
                    raise DispatchError(
                        f"Lambda refused the invocation: {code} (HTTP {status}): {e}"
                    ) from e
                await self.sleep(backoff(n))
                continue
            except BotoCoreError as e:  # connection, timeout, credentials
                raise DispatchError(f"Lambda could not be reached: {e}") from e
            if int(out.get("StatusCode", 0)) != 202:
                raise DispatchError(
                    f"Lambda answered {out.get('StatusCode')} to an Event invocation"
                )
            return

    async def health(self, cloud: Mapping[str, Any], secret: SecretReader) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        aws = cloud.get("aws") or {}
        args = {"FunctionName": aws["functionName"]}
        if aws.get("qualifier"):
            args["Qualifier"] = aws["qualifier"]
        try:
            client = await self.client(cloud, secret)
            out = await asyncio.to_thread(client.get_function, **args)
        except (ClientError, BotoCoreError, DispatchError) as e:
            return f"GetFunction failed: {e}"
        return lambda_problem(out.get("Configuration") or {})

    async def close(self) -> None:
        self.clients.clear()


def lambda_problem(conf: Mapping[str, Any]) -> str | None:
    """Why a function (GetFunction's Configuration) cannot take work now, or None (pure)."""
    state, update = conf.get("State"), conf.get("LastUpdateStatus")
    if state != "Active":
        return f"the function's state is {state} ({conf.get('StateReason', 'no reason given')})"
    if update not in (None, "Successful"):
        return f"the function's last update is {update} ({conf.get('LastUpdateStatusReason', '')})"
    return None


def encode(invocation: Mapping[str, Any]) -> bytes:
    return json.dumps(invocation, separators=(",", ":")).encode()


class Executors:
    """The executor of each provider, shared by every Agent of that provider."""

    def __init__(self, allow_plain_http: bool = False) -> None:
        # A key's token_uri other than Google's only under the development setting.
        self.http = HttpExecutor(allow_plain_http=allow_plain_http,
                                 id_tokens=IdTokens(allow_any_token_uri=allow_plain_http))  # fmt: skip
        self.azure = azure_executor(allow_plain_http)
        self.aws = LambdaExecutor()

    def of(self, provider: str | None) -> Executor:
        match provider:
            case "http":
                return self.http
            case "azure-functions":
                return self.azure
            case "aws-lambda":
                return self.aws
        raise DispatchError(f"unknown cloud provider {provider!r}")

    async def close(self) -> None:
        await self.http.close()
        await self.azure.close()
        await self.aws.close()
