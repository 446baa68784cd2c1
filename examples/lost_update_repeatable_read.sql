-- Lost update (P4) at repeatable read: prevented.
--
-- The same schedule as lost_update_read_committed.sql. At repeatable read
-- T2 may not overwrite a row version it never saw: when T1 commits, T2's
-- blocked update fails with 40001 (serialization failure) instead.
create table test (id int primary key, value int);
insert into test (id, value) values (1, 10), (2, 20);

begin; set transaction isolation level repeatable read; -- T1
begin; set transaction isolation level repeatable read; -- T2
select value from test where id = 1; -- T1. Shows 10
select value from test where id = 1; -- T2. Shows 10
update test set value = 11 where id = 1; -- T1
update test set value = 12 where id = 1; -- T2, BLOCKS
commit; -- T1. T2 unblocks: ERROR 40001 could not serialize access due to concurrent update
rollback; -- T2. Nothing else to do: this transaction has failed
select value from test where id = 1; -- T3. Shows 11: T1's write survives
