from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TokenSet(_message.Message):
    __slots__ = ("access_token", "refresh_token", "id_token", "token_type", "scope", "expires_at", "needs_login", "obtained_at")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ID_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    NEEDS_LOGIN_FIELD_NUMBER: _ClassVar[int]
    OBTAINED_AT_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    refresh_token: str
    id_token: str
    token_type: str
    scope: str
    expires_at: int
    needs_login: bool
    obtained_at: int
    def __init__(self, access_token: _Optional[str] = ..., refresh_token: _Optional[str] = ..., id_token: _Optional[str] = ..., token_type: _Optional[str] = ..., scope: _Optional[str] = ..., expires_at: _Optional[int] = ..., needs_login: _Optional[bool] = ..., obtained_at: _Optional[int] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ("subject", "email", "name", "groups", "provider_session_id", "claims")
    class ClaimsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    subject: str
    email: str
    name: str
    groups: _containers.RepeatedScalarFieldContainer[str]
    provider_session_id: str
    claims: _containers.ScalarMap[str, str]
    def __init__(self, subject: _Optional[str] = ..., email: _Optional[str] = ..., name: _Optional[str] = ..., groups: _Optional[_Iterable[str]] = ..., provider_session_id: _Optional[str] = ..., claims: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("version", "identity", "created_at", "expires_at", "tokens")
    class TokensEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TokenSet
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TokenSet, _Mapping]] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    version: int
    identity: Identity
    created_at: int
    expires_at: int
    tokens: _containers.MessageMap[str, TokenSet]
    def __init__(self, version: _Optional[int] = ..., identity: _Optional[_Union[Identity, _Mapping]] = ..., created_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., tokens: _Optional[_Mapping[str, TokenSet]] = ...) -> None: ...
