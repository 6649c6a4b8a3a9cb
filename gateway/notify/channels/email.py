"""SMTP e-mail (stdlib ``smtplib``): plain text with an HTML alternative, to a fixed list of addresses."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gateway.notify.channels.base import Channel, Message, Outcome, Timer


class EmailConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["email"]
    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    to: tuple[str, ...] = Field(min_length=1)
    html: bool = True  # plain text only when false
    timeout_s: float | None = Field(None, gt=0, le=120)


def build_email(message: Message, sender: str, to: tuple[str, ...], *, html: bool) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(idstring=message.delivery.replace(",", "-"), domain="safeguard")
    mail["X-Safeguard-Delivery"] = message.delivery
    mail["X-Safeguard-Event"] = message.event
    mail.set_content(message.text)
    if html:
        mail.add_alternative(message.html, subtype="html")
    return mail


class EmailChannel(Channel):
    type = "email"

    def __init__(self, name: str, config: EmailConfig, timeout_s: float) -> None:
        super().__init__(name, config.timeout_s or timeout_s)
        self._config = config

    @property
    def target(self) -> str:
        return ", ".join(self._config.to)

    def send(self, message: Message) -> Outcome:
        config = self._config
        mail = build_email(message, config.sender, config.to, html=config.html)
        timer = Timer()
        try:
            smtp: smtplib.SMTP
            if config.security == "ssl":
                smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=self.timeout_s,
                                        context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(config.host, config.port, timeout=self.timeout_s)
            with smtp:
                if config.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if config.username:
                    smtp.login(config.username, config.password.get_secret_value() if config.password else "")
                refused = smtp.send_message(mail)
        except TimeoutError as exc:
            return Outcome("timeout", None, f"timed out after {self.timeout_s:g} s ({exc})", timer.ms())
        except smtplib.SMTPResponseException as exc:
            return Outcome("error", exc.smtp_code, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"[:500], timer.ms())
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome("error", None, f"{type(exc).__name__}: {exc}"[:500], timer.ms())
        if refused:
            return Outcome("error", 250, f"refused recipients: {sorted(refused)}", timer.ms())
        return Outcome("ok", 250, None, timer.ms())
