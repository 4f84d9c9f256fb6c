"""What happens in a chat, independent of any wire format.

Two families of frozen, slotted dataclasses:

* *Requests*: what a user asks for (say something, change name, ...). A wire
  protocol parses its input into these.
* *Server events*: what the chat tells a user (a message, a join, an error).
  A wire protocol turns these into bytes.

The chat logic and the hub speak only in these terms, so a second wire
protocol (IRC, WebSocket) can serve the same chat.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

#: The one room there is, for now.
LOBBY = "#lobby"

#: The `BYE` code of a connection replaced by its registered name signing in
#: from another connection: a client that reconnected on its own would
#: replace that one in turn, for ever.
SIGNED_IN_ELSEWHERE = "signed-in-elsewhere"


def key_notice(name: str, room: str, *, removed: bool = False) -> str:
    """What a room's members are told when `name` sets (removes) its key.

    The key itself is never told; a client that set it knows it, and keeps
    it to join the room again with it.
    """
    done = "removed the" if removed else "set a"
    return f"{name} {done} key on {room}."


# --------------------------------------------------------------------------
# Requests (user -> chat)


@dataclasses.dataclass(frozen=True, slots=True)
class Say:
    """A plain chat line for `room` ("": the current one).

    A `notice` (IRC's NOTICE) is relayed as one and never answered
    automatically: no error, no away notice comes back.
    """

    text: str
    room: str = ""
    notice: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Me:
    """An action (`/me waves`) in `room` ("": the current one)."""

    text: str
    room: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Nick:
    """Change one's name."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class PrivateMsg:
    """A private message to one user (a `notice`: as for `Say`)."""

    name: str
    text: str
    notice: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Who:
    """List who is in a room: "" the current one, "*" everyone online.

    Long lists come in pages (`page` counts from 1).
    """

    room: str = ""
    page: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Join:
    """Join (or create) a room, with its key if it has one.

    With `names`, the answer is the one IRC clients expect: the room's
    members as one `Roster` (instead of the who listing), and its history
    after them rather than before the join.
    """

    room: str
    key: str = ""
    names: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Part:
    """Leave a room ("" the current one)."""

    room: str = ""
    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class PartAll:
    """Leave every room one is in (IRC's `JOIN 0`)."""

    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Names:
    """Who is in `target`, with their standing, as one `Roster`.

    `target` is a room, `*` (everyone online) or a name (that user, if
    online). `detail` asks for IRC's WHO rather than NAMES (echoed in the
    `Roster`, which wire formats render differently).
    """

    target: str
    detail: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class ListRooms:
    """Every room, as one `RoomList` (IRC's LIST)."""


@dataclasses.dataclass(frozen=True, slots=True)
class IsOn:
    """Which of `names` are online: answered with `Online` (IRC's ISON and,
    with `userhost`, USERHOST)."""

    names: tuple[str, ...]
    userhost: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Switch:
    """Make `room` (already joined) where plain lines go."""

    room: str


@dataclasses.dataclass(frozen=True, slots=True)
class Away:
    """Mark oneself away ("" reason: just away)."""

    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Back:
    """No longer away."""


@dataclasses.dataclass(frozen=True, slots=True)
class Whois:
    """What is known of a user who is online."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Ignore:
    """Stop seeing a user's lines ("" name: list who is ignored)."""

    name: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Unignore:
    """See a user's lines again."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """A private message to whoever last sent one to us."""

    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Kick:
    """A room op removes `name` from `room` ("": the current one)."""

    name: str
    reason: str = ""
    room: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Mute:
    """A room op silences `name` in `room` ("": current; 0 seconds: unmute)."""

    name: str
    seconds: float = math.inf
    #: The duration as the op typed it (`90s`), shown as given; "" if none.
    duration: str = ""
    room: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Ban:
    """A server op bans a name or an address for `seconds` (inf: until lifted)."""

    target: str
    seconds: float = math.inf
    reason: str = ""
    #: The duration as the op typed it (`7d`), shown as given; "" if none.
    duration: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Unban:
    """A server op lifts the bans on a name or an address."""

    target: str


@dataclasses.dataclass(frozen=True, slots=True)
class Bans:
    """A server op lists the bans in force (a page of them, from 1)."""

    page: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Motd:
    """Show the message of the day (None), or set it (server ops; "-" clears)."""

    text: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CertBinding:
    """Bind (`add`) or unbind the TLS client certificate to one's own name."""

    add: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class RoomMode:
    """A room op changes the room: `op` NAME, `key` [KEY], `lecture` on|off.

    `room` "" is the current one. A `setting` of "" asks any member for
    the room's settings instead (`ModesAre`, IRC's `MODE #room`).
    """

    setting: str
    value: str = ""
    room: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Register:
    """Reserve one's current name with a password."""

    password: str


@dataclasses.dataclass(frozen=True, slots=True)
class Identify:
    """Prove one's current (registered) name with its password."""

    password: str


@dataclasses.dataclass(frozen=True, slots=True)
class Since:
    """Replay on joining only what was said at or after `ts`: a client that
    reconnects has seen what came before (allowed before a name, too)."""

    ts: float


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    """Replay the current room's last `count` lines."""

    count: int


@dataclasses.dataclass(frozen=True, slots=True)
class Rooms:
    """List the rooms (a page of them, from 1)."""

    page: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Topic:
    """Show `room`'s topic (None) or set it; `room` "" is the current one."""

    text: str | None = None
    room: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Help:
    """List the commands."""


@dataclasses.dataclass(frozen=True, slots=True)
class Quit:
    """Leave the chat, with an optional reason."""

    reason: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class BadCommand:
    """A command the user got wrong; `code` and `text` explain how."""

    code: str
    text: str


Request = (
    Say
    | Me
    | Nick
    | PrivateMsg
    | Who
    | Join
    | Part
    | PartAll
    | Names
    | ListRooms
    | IsOn
    | Switch
    | Rooms
    | Topic
    | History
    | Since
    | Register
    | Identify
    | RoomMode
    | Kick
    | Mute
    | Ban
    | Unban
    | Bans
    | Motd
    | CertBinding
    | Away
    | Back
    | Whois
    | Ignore
    | Unignore
    | Reply
    | Help
    | Quit
    | BadCommand
)


# Logging in: what a wire that gathers its login itself (IRC's PASS, NICK,
# USER and SASL) asks of the connection, which answers through the chat
# (`Chat.give_server_password`, `Chat.choose_name`) and the accounts.


@dataclasses.dataclass(frozen=True, slots=True)
class ServerPassword:
    """The server password, given before a name (IRC's PASS)."""

    password: str


@dataclasses.dataclass(frozen=True, slots=True)
class LogIn:
    """Check `password` for the registered `name` (IRC's SASL PLAIN).

    Answered with `LoggedIn` or an `Error` (`bad-password`,
    `login-refused`, `no-accounts`); the name is not taken yet.
    """

    name: str
    password: str


@dataclasses.dataclass(frozen=True, slots=True)
class ChooseName:
    """Take `name` and enter the chat (the end of IRC's registration).

    `proven`: a `LogIn` for this very name succeeded on this connection,
    so it is taken as its owner's (`Chat.choose_name(identified=True)`).
    """

    name: str
    proven: bool = False


LoginRequest = ServerPassword | LogIn | ChooseName


# --------------------------------------------------------------------------
# Server events (chat -> user)


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    """The first thing a connection hears: protocol, server and its limits."""

    protocol: str
    server: str
    max_line_bytes: int
    #: The flood limit clients should pace themselves within (0: none).
    flood_burst: int = 0
    flood_rate: float = 0.0
    #: The most lines and bytes of text in one multi-line message (0: none).
    paste_lines: int = 0
    paste_bytes: int = 0
    #: Seconds a connection has to choose a name (0: no limit).
    name_timeout: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Banner:
    """One line of the ASCII-art welcome."""

    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Info:
    """Server information for the user; `room` names the room it is about,
    when it is told to a room's members (what an op did there)."""

    text: str
    room: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class NamePrompt:
    """The server waits for a name."""

    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class PasswordPrompt:
    """The name chosen is registered: the server waits for its password."""

    name: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Welcome:
    """The name was accepted: the user is in."""

    name: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A chat line from `sender` in `room`.

    A multi-line message (a paste) holds its lines joined by "\\n"; it is
    said, stored and replayed as one message. A `notice` (said with IRC's
    NOTICE) must not be answered automatically.
    """

    ts: float
    room: str
    sender: str
    text: str
    notice: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class MoreLine:
    """A further line of the multi-line `Message` just before it (as decoded)."""

    ts: float
    room: str
    sender: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Action:
    """A `/me` action from `sender` in `room`."""

    ts: float
    room: str
    sender: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Private:
    """A private message from `sender` to `recipient` (`notice`: as `Message`)."""

    ts: float
    sender: str
    recipient: str
    text: str
    notice: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Joined:
    """`name` joined `room`."""

    ts: float
    room: str
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class JoinedMany:
    """`names` joined `room`, in that order, the last of them at `ts`.

    Big rooms hear joins gathered like this (see `Hub.announce_join`); the
    names are never summarised away, only put on fewer lines.
    """

    ts: float
    room: str
    names: tuple[str, ...]


#: How someone left a room: left the server on purpose (quit), was cut off
#: (disconnected), or left just that room and is still online (parted).
LeaveHow = Literal["quit", "disconnected", "parted"]


@dataclasses.dataclass(frozen=True, slots=True)
class Left:
    """`name` left `room`: it quit, or was disconnected; `reason` may be ""."""

    ts: float
    room: str
    name: str
    how: LeaveHow
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Kicked:
    """An op of `room`, `by`, put `name` out of it; `reason` may be ""."""

    ts: float
    room: str
    name: str
    by: str
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class LeftMany:
    """`names` left `room` alike (quit or disconnected, with one reason).

    Big rooms hear a crowd leaving like this (see `Hub.announce_leave`).
    """

    ts: float
    room: str
    names: tuple[str, ...]
    how: LeaveHow
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Renamed:
    """`old` is now known as `new`."""

    ts: float
    room: str
    old: str
    new: str


@dataclasses.dataclass(frozen=True, slots=True)
class WhoList:
    """Who is in `room` (one event may carry part of a long list)."""

    room: str
    names: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class TopicIs:
    """`room`'s topic, set by `setter` at `ts` ("" text: no topic).

    `changed`: it was set just now (told to the room's members), rather than
    shown on joining or on asking (IRC shows the two differently).
    """

    ts: float
    room: str
    setter: str
    text: str
    changed: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class RoomInfo:
    """One room in a `/rooms` listing; `keyed` if joining it needs a key."""

    room: str
    members: int
    topic: str
    keyed: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Switched:
    """Plain lines from this user now go to `room`."""

    room: str


@dataclasses.dataclass(frozen=True, slots=True)
class MotdLine:
    """One line of the server's message of the day."""

    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class MotdIs:
    """The whole message of the day (no lines: there is none), in one event."""

    lines: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Standing:
    """One user in a `Roster` or `Online`: `op` of the room listed (where
    no room is listed: a server operator), and whether `away`."""

    name: str
    op: bool = False
    away: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Roster:
    """Who is in `target` (a room, `*` or a name: see `Names`), sorted.

    `total` counts them all; `members` holds those that fit in one reply.
    `detail` echoes the request's.
    """

    target: str
    members: tuple[Standing, ...]
    total: int
    detail: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class RoomList:
    """The rooms that fit in one reply, sorted; `total` counts them all."""

    rooms: tuple[RoomInfo, ...]
    total: int


@dataclasses.dataclass(frozen=True, slots=True)
class Online:
    """Those of the names asked about (`IsOn`) who are online."""

    members: tuple[Standing, ...]
    userhost: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class WhoisReply:
    """What is known of `name`, who is online, for `/whois`.

    `text` says it all for people (what the line protocol shows); the other
    fields say it for programs: its `rooms` (those it is an op of also in
    `op_rooms`), since when it is online (`since`, chat clock) and how long
    idle (`idle`, seconds), its `address` (told only to server operators),
    whether it is a server `operator`, whether its name is a registered one
    it proved (`account`), and its `away` reason, free text, last.
    """

    name: str
    text: str
    rooms: tuple[str, ...]
    op_rooms: tuple[str, ...]
    since: float
    idle: float
    address: str | None
    operator: bool
    account: bool
    away: str


@dataclasses.dataclass(frozen=True, slots=True)
class MarkedAway:
    """You are marked away, for `reason` ("": you are back); `text` for people."""

    reason: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class AwayIs:
    """`name`, whom you just messaged, is away: `reason`; `text` for people."""

    name: str
    reason: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class RoomChanged:
    """An op of `room`, `by`, changed it: `setting` and `value` as in
    `RoomMode` (`op` NAME, `key` KEY or "" for none, `lecture` on|off);
    `text` says so for people. Told to the room's members."""

    room: str
    by: str
    setting: str
    value: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class ModesAre:
    """`room`'s settings, for a member who asked: its `key` ("": none), and
    whether it is a `lecture` (only ops may speak)."""

    room: str
    key: str
    lecture: bool


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedIn:
    """The password of the registered `name` was right (the answer to `LogIn`)."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class HelpLine:
    """One line of `/help`."""

    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Error:
    """A request failed; `code` is stable for programs, `text` for people.

    `subject` is the name or room the request was about, where there is one
    (IRC's error replies name it).
    """

    code: str
    text: str
    subject: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Goodbye:
    """The last line before the server closes the connection.

    `retry_after`: for a refusal that clears up with time, the seconds after
    which trying again may succeed (0: the server does not know).
    """

    code: str
    text: str
    retry_after: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Replayed:
    """A chat or notice event replayed from history, with its original time."""

    event: Message | Action | Joined | Left | Kicked | Renamed | TopicIs | MoreLine


ServerEvent = (
    Hello
    | Banner
    | Info
    | NamePrompt
    | PasswordPrompt
    | Welcome
    | Message
    | MoreLine
    | Action
    | Private
    | Joined
    | JoinedMany
    | Left
    | Kicked
    | LeftMany
    | Renamed
    | WhoList
    | TopicIs
    | RoomInfo
    | Switched
    | MotdLine
    | MotdIs
    | Roster
    | RoomList
    | Online
    | WhoisReply
    | MarkedAway
    | AwayIs
    | RoomChanged
    | ModesAre
    | LoggedIn
    | HelpLine
    | Error
    | Goodbye
    | Replayed
)
