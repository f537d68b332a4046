"""Storage back ends of the drive: one :class:`~.base.Storage` contract, two engines
(:mod:`.local` — a directory served through signed URLs — and :mod:`.s3`)."""
