"""A site's consent to a federation plan: the dialog, and the adapter that asks it from the node's consent thread.

The site node's :class:`~core.federated.site_consent.ConsentDesk` calls its asker from a thread of its own and
waits for the answer. :class:`ConsentAsker` hops to the GUI thread with a queued signal, opens
:class:`ConsentDialog` there (window-modal, so the GUI thread never blocks) and wakes the waiting thread when the
user answers. Declining is the safe choice: it is the default button, Escape and closing the dialog.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtGui import QTextOption
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from core.federated.site_consent import APPROVE, APPROVE_WITHIN_POLICY, DECLINE

TITLE = "Approve this federation plan?"
INTRO = (
    "A federation server asks this site to train on its images. The plan is within this site's policy; "
    "approve it only if this site expects to take part in this federation. Nothing is trained until you answer."
)
_HASH_PREFIX = "Plan hash"


class ConsentDialog(QDialog):
    """The plan's sentences, its hash, and three answers; :attr:`choice` holds the answer once it is closed.

    Parameters
    ----------
    lines
        Ready-made sentences about the plan (:meth:`core.federated.plan_summary.PlanSummary.lines`).
    plan_hash
        The SHA-256 of the plan and the server's CA fingerprint, shown small.
    """

    def __init__(self, lines: list[str], plan_hash: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(TITLE)
        self.choice = DECLINE
        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        shown = [line for line in lines if not line.startswith(_HASH_PREFIX)]  # the hash has its own small line
        # Read-only text that wraps anywhere: a CA fingerprint is one long word.
        self.plan_text = QPlainTextEdit("\n\n".join(shown))
        self.plan_text.setReadOnly(True)
        self.plan_text.setTabChangesFocus(True)
        self.plan_text.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.plan_text.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.hash_label = QLabel(f"Plan hash (SHA-256): {plan_hash}")
        self.hash_label.setWordWrap(True)
        self.hash_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        small = self.hash_label.font()
        small.setPointSizeF(max(9.0, small.pointSizeF() * 0.9))  # smaller than the plan, never below 9 pt
        self.hash_label.setFont(small)
        self.approve_button = QPushButton("&Approve")
        self.decline_button = QPushButton("&Decline")
        self.within_button = QPushButton("Approve plans &within my policy from now on")
        self.within_button.setToolTip(
            "Approve this plan, and every later plan that is within this site's policy, without asking, until "
            "this site leaves the federation."
        )
        buttons = QDialogButtonBox()
        buttons.addButton(self.within_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.approve_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.decline_button, QDialogButtonBox.ButtonRole.RejectRole)
        for button in (self.approve_button, self.within_button):
            button.setAutoDefault(False)
        self.decline_button.setAutoDefault(True)
        self.decline_button.setDefault(True)  # Enter declines; a stray key press never approves
        self.approve_button.clicked.connect(lambda: self._answer(APPROVE))
        self.within_button.clicked.connect(lambda: self._answer(APPROVE_WITHIN_POLICY))
        self.decline_button.clicked.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.plan_text, 1)
        layout.addWidget(self.hash_label)
        layout.addWidget(buttons)
        self.resize(620, 460)
        self.decline_button.setFocus()

    def _answer(self, choice: str) -> None:
        self.choice = choice
        self.accept()

    def reject(self) -> None:
        """Decline (the Decline button, Escape, or closing the window)."""
        self.choice = DECLINE
        super().reject()


@dataclass(eq=False)  # two questions about the same plan are still two questions
class _Question:
    """One open question: what to show, and where the waiting thread picks up the answer."""

    lines: list[str]
    plan_hash: str
    answer: str = DECLINE
    done: threading.Event = field(default_factory=threading.Event)
    dialog: ConsentDialog | None = None


class ConsentAsker(QObject):
    """Asks the site's user about a plan, from any thread; create it on the GUI thread.

    Pass it as :class:`~core.federated.nodes.SiteNode`'s ``asker``. A call from another thread blocks that thread
    until the user answers (never the GUI thread); :meth:`decline_open` and :meth:`close` answer every open
    question with ``"decline"``.

    Signals
    -------
    answered(str, str)
        The user's choice and the plan's hash, on the GUI thread, after the asking thread was woken.
    """

    answered = Signal(str, str)
    _asked = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._parent_widget = parent
        self._lock = threading.Lock()
        self._open: list[_Question] = []
        self._closed = False
        self._asked.connect(self._show, Qt.ConnectionType.QueuedConnection)
        # Destroyed with its page while a question is open: decline it (a plain list, not self, is captured).
        questions, lock = self._open, self._lock
        self.destroyed.connect(lambda *_: _decline_all(questions, lock))

    def __call__(self, lines: list[str], plan_hash: str) -> str:
        """Show the plan and return the user's choice: ``"approve"``, ``"decline"`` or ``"approve-within-policy"``.

        Parameters
        ----------
        lines
            The plan's sentences.
        plan_hash
            The plan's hash.
        """
        question = _Question(list(lines), plan_hash)
        with self._lock:
            if self._closed:
                return DECLINE
            self._open.append(question)
        if QThread.currentThread() is self.thread():
            self._show(question, nested=True)  # asked on the GUI thread itself: answered in a nested loop
        else:
            self._asked.emit(question)
        question.done.wait()
        return question.answer

    @property
    def open_questions(self) -> int:
        """How many questions are waiting for the user."""
        with self._lock:
            return len(self._open)

    def dialogs(self) -> list[ConsentDialog]:
        """The dialogs now open (for tests and for closing them)."""
        with self._lock:
            return [q.dialog for q in self._open if q.dialog is not None]

    def decline_open(self) -> None:
        """Answer every open question with a decline and close its dialog (the site is leaving); GUI thread."""
        with self._lock:
            open_now = list(self._open)
        for question in open_now:
            if question.dialog is not None:
                question.dialog.finished.disconnect()
                question.dialog.close()
                question.dialog.deleteLater()
        _decline_all(self._open, self._lock)

    def close(self) -> None:
        """Decline every open question and every later one (the page is closing)."""
        with self._lock:
            self._closed = True
        self.decline_open()

    @Slot(object)
    def _show(self, question: _Question, nested: bool = False) -> None:
        with self._lock:
            if question not in self._open:  # declined before the GUI thread got to it
                return
        dialog = ConsentDialog(question.lines, question.plan_hash, self._parent_widget)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        question.dialog = dialog
        dialog.finished.connect(lambda _result: self._finish(question))
        if nested:
            dialog.exec()
        else:
            dialog.open()

    def _finish(self, question: _Question) -> None:
        dialog = question.dialog
        answer = dialog.choice if dialog is not None else DECLINE
        with self._lock:
            if question not in self._open:
                return
            self._open.remove(question)
        question.answer = answer
        question.done.set()
        if dialog is not None:
            dialog.deleteLater()
        self.answered.emit(answer, question.plan_hash)


def _decline_all(questions: list[_Question], lock: threading.Lock) -> None:
    with lock:
        waiting = list(questions)
        questions.clear()
    for question in waiting:
        question.answer = DECLINE
        question.done.set()
