"""The chapter's three DataLoaders in one call, with the bonus switch that pads each batch to its own longest text."""

import torch
from torch.utils.data import DataLoader

from spam_dataset import DataError, SpamDataset


class UnpaddedSpamDataset(SpamDataset):
    """SpamDataset's token ids cut to max_length but not padded: a collate function pads each batch instead."""

    def __init__(self, csv_file, tokenizer, max_length=None, pad_token_id=50256):
        super().__init__(csv_file, tokenizer, max_length, pad_token_id)
        lengths = [len(tokenizer.encode(text, disallowed_special=())) for text in self.data["Text"]]
        self.encoded_texts = [ids[:n] for ids, n in zip(self.encoded_texts, lengths)]


def pad_batch(batch, pad_token_id=50256):
    """Collate (ids, label) pairs, padding ids to the longest in this batch: [b, t] ids and [b] labels."""
    longest = max(len(ids) for ids, _ in batch)
    inputs = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
    for i, (ids, _) in enumerate(batch):
        inputs[i, :len(ids)] = ids
    return inputs, torch.stack([label for _, label in batch])


class _PadCollate:
    """A picklable collate function (num_workers > 0 needs one) that pads with a given id."""

    def __init__(self, pad_token_id):
        self.pad_token_id = pad_token_id

    def __call__(self, batch):
        return pad_batch(batch, self.pad_token_id)


def create_data_loaders(train_csv, val_csv, test_csv, tokenizer, batch_size=8, num_workers=0, max_length=None,
                        seed=123, per_batch_padding=False, pad_token_id=50256):
    """The chapter's three DataLoaders; val/test use the training max_length; returns (train, val, test)."""
    torch.manual_seed(seed)
    dataset_class = UnpaddedSpamDataset if per_batch_padding else SpamDataset
    train_dataset = dataset_class(train_csv, tokenizer, max_length=max_length, pad_token_id=pad_token_id)
    val_dataset = dataset_class(val_csv, tokenizer, max_length=train_dataset.max_length, pad_token_id=pad_token_id)
    test_dataset = dataset_class(test_csv, tokenizer, max_length=train_dataset.max_length, pad_token_id=pad_token_id)
    if len(train_dataset) < batch_size:
        raise DataError(f"the training split has {len(train_dataset)} rows, fewer than batch_size={batch_size}, "
                        f"so it would give no batch (drop_last); use more data or a smaller --batch-size")
    collate_fn = _PadCollate(pad_token_id) if per_batch_padding else None
    train_loader = DataLoader(dataset=train_dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                              drop_last=True, collate_fn=collate_fn)
    val_loader = DataLoader(dataset=val_dataset, batch_size=batch_size, num_workers=num_workers, drop_last=False,
                            collate_fn=collate_fn)
    test_loader = DataLoader(dataset=test_dataset, batch_size=batch_size, num_workers=num_workers,
                             drop_last=False, collate_fn=collate_fn)
    return train_loader, val_loader, test_loader
