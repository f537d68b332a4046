"""The curated smart-reply set of the local provider (English).

Each intent pairs a few example *incoming* messages with short replies that fit them.
The local provider embeds the examples once, finds the intents closest to the last
incoming message, and offers their replies in that order. Replies are written to be
safe whatever the exact wording was (no invented facts, names or times).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Intent:
    name: str
    examples: tuple[str, ...]
    replies: tuple[str, ...]


INTENTS: tuple[Intent, ...] = (
    Intent("greeting",
           ("Hi there!", "Hello, how are you?", "Good morning everyone", "Hey, how's it going?"),
           ("Hi! All good here, you?", "Hello!", "Good morning!")),
    Intent("thanks",
           ("Thanks a lot for your help", "Thank you so much!", "Many thanks, that was great",
            "Cheers for sorting that out"),
           ("You're welcome!", "Happy to help.", "Any time!")),
    Intent("apology",
           ("Sorry, my mistake", "I apologise for the delay", "Sorry I missed your call",
            "My bad, I forgot to send it"),
           ("No worries!", "No problem at all.", "It happens, don't worry.")),
    Intent("meeting",
           ("Can we meet tomorrow at 10?", "Are you free for a call this afternoon?",
            "Shall we schedule a meeting next week?", "Does Thursday work for a quick sync?"),
           ("Works for me.", "Let me check my calendar and get back to you.",
            "Could we do a bit later?")),
    Intent("running_late",
           ("I'm running 10 minutes late", "Stuck in traffic, will be late",
            "Sorry, I'll be a bit late to the meeting", "Running behind, start without me"),
           ("No problem, see you soon.", "Thanks for letting me know.",
            "We'll wait for you.")),
    Intent("help_request",
           ("Can you help me with this?", "Could you take a look at my code?",
            "I need some help with the report", "Do you have a minute to help me?"),
           ("Sure, what do you need?", "Yes, I can take a look.",
            "I'm busy right now, can it wait an hour?")),
    Intent("review_request",
           ("Can you review my pull request?", "Please review the document before Friday",
            "Could you check my changes?", "PR is ready for review"),
           ("Sure, I'll review it today.", "On it.", "I'll take a look shortly.")),
    Intent("status_check",
           ("How is the project going?", "Any update on the release?",
            "What's the status of the ticket?", "Did you finish the report?"),
           ("It's going well, almost done.", "I'll send an update shortly.",
            "Not yet, I'll let you know.")),
    Intent("task_done",
           ("I've finished the report", "The deployment is complete",
            "Done! The fix is merged", "I sent you the files"),
           ("Great, thanks!", "Awesome, thank you!", "Perfect, I'll take a look.")),
    Intent("congratulations",
           ("I got the job!", "We won the contract!", "I passed my exam",
            "We just launched the new version!"),
           ("Congratulations!", "That's fantastic news!", "Well done!")),
    Intent("bad_news",
           ("I'm not feeling well today", "My flight got cancelled",
            "I lost my wallet", "Unfortunately the client rejected our proposal"),
           ("Oh no, sorry to hear that.", "That's rough. Anything I can do?",
            "Take care of yourself.")),
    Intent("outage",
           ("The server is down", "Production is broken, users can't log in",
            "The build is failing on main", "The site is returning errors"),
           ("Looking into it now.", "On it, I'll report back.",
            "Is anyone else already on this?")),
    Intent("food",
           ("Want to grab lunch?", "Anyone up for coffee?", "Let's get pizza tonight",
            "Dinner at 7?"),
           ("Sounds good!", "I'm in!", "Can't today, maybe next time?")),
    Intent("location",
           ("Where are you?", "Where should we meet?", "What's the address?",
            "Which room is the meeting in?"),
           ("I'll send you the location.", "On my way.", "Let me check and tell you.")),
    Intent("opinion",
           ("What do you think about the new design?", "Which option do you prefer?",
            "Should we go with plan A or B?", "Any thoughts on this proposal?"),
           ("Looks good to me.", "Let me think about it.", "I'd prefer the first option.")),
    Intent("confirmation",
           ("Is that okay with you?", "Can you confirm you received it?",
            "Are we still on for today?", "Did you get my email?"),
           ("Yes, confirmed.", "Yes, got it.", "Let me check and confirm.")),
    Intent("goodbye",
           ("Good night everyone", "See you tomorrow", "I'm heading out, bye!",
            "Have a nice weekend"),
           ("See you!", "Good night!", "You too, have a great weekend!")),
    Intent("information",
           ("FYI the office is closed on Monday", "Just so you know, the meeting moved to 3pm",
            "Heads up: the API changes next week", "Note that the deadline is Friday"),
           ("Thanks for the heads-up.", "Good to know, thanks.", "Noted.")),
)
